"""Unlabelled slices for pre-training: random windows of nnU-Net's preprocessed cases."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def slice_windows(
    cases: Sequence[np.ndarray],
    window: tuple[int, int],
    batch_size: int,
    seed: int,
) -> Iterator[torch.Tensor]:
    """Endless ``B x C x h x w`` batches: a random slice of a random case, a random window
    of it (zero-padded where the slice is smaller), as the SAM configuration's patches are.

    Arguments:
      cases: preprocessed images ``C x Z x H x W`` (nnU-Net's 2d layout: slices along Z);
        labels are never read.
      window: ``h x w``, the SAM configuration's patch size.
    """
    generator = np.random.default_rng(seed)
    slices = [(c, z) for c, case in enumerate(cases) for z in range(case.shape[1])]
    height, width = window
    while True:
        batch = np.zeros((batch_size, cases[0].shape[0], height, width), np.float32)
        for row, index in enumerate(generator.integers(len(slices), size=batch_size)):
            case, z = slices[index]
            image = np.asarray(cases[case][:, z])
            top = generator.integers(max(1, image.shape[1] - height + 1))
            left = generator.integers(max(1, image.shape[2] - width + 1))
            crop = image[:, top : top + height, left : left + width]
            batch[row, :, : crop.shape[1], : crop.shape[2]] = crop
        yield torch.from_numpy(batch)
