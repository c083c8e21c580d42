"""The frozen-encoder embedding cache: each window's encoder output computed once, on disk.

With a frozen image encoder (``encoder_mode`` "cached", Xie et al. 2024) training only
needs each window's embedding, and the encoder is almost the whole cost on a CPU. The
windows are those nnU-Net's predictor sees for a 2d configuration: every slice along axis 0
of each preprocessed case (``C x Z x H x W``; Z = 1 for 2D data), zero-padded to at least
the patch size (``pad_nd_image``) and cut at ``compute_steps_for_sliding_window``'s
positions with tile step 0.5, so training and inference see the same inputs.
"prefix_cached" stores the output of the encoder's frozen leading stages instead
(``samnet.models.encoder_prefix``).

Layout of ``nnUNet_preprocessed/<Dataset>/samnet_cache/<key>/`` (``<key>``: a hash of
``CacheKey``, everything that changes a cached value):

- ``features.npy``: float16, ``N x D x h x w`` image embeddings (a prefix cache: the
  prefix output, in the layout the rest of the encoder takes), whatever precision
  computed them (``CacheKey.compute_dtype``);
- ``labels.npy``: int16, ``N x H x W`` (H x W the patch size), nnU-Net's preprocessed
  segmentation; -1 marks outside the image (nnU-Net's mark, also used for the padding);
- ``images.npy``, only for a network with an image branch (``CacheKey.images``):
  float16, ``N x C x H x W``, each window as the network receives it (nnU-Net's
  preprocessed, zero-padded window, augmented in a view), before the input adapter's
  resize: the branch reads the network's input, so cached training runs it on what the
  predictor gives it (float16-rounded, as the features). Each channel takes as many
  bytes as the labels: a one-channel 256 px window 128 KB beside LiteMedSAM's 2 MB
  256 x 64 x 64 float16 embedding (6% more); a Hippocampus 56 px window 6 KB beside
  its 512 KB 256 x 32 x 32 embedding at 128 px;
- ``index.npy``: int32, ``N x 5``: case number (into ``cases``), slice, window y0, x0,
  foreground pixels;
- ``cache.json``: the key inputs, shapes, dtypes, number of windows, cases, and
  ``data_sha256``, the hash of the preprocessed data it was built from (checked on every
  use: the key names what computes the values, this what they were computed from).

All cases of the configuration are cached; a fold's training cases are chosen at read time
(``EmbeddingCache.rows_for_cases``), so every fold shares one cache. This module reads
caches; ``samnet.preprocessing.cache.build`` builds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samnet.core.errors import SamnetError
from samnet.core.layout import CACHE_INFO_FILE

CACHE_FORMAT_VERSION = 1
# nnUNetPredictor's default tile step: windows overlap by half a patch.
TILE_STEP_SIZE = 0.5
# nnU-Net's mark for "outside the image" in preprocessed segmentations and padded patches.
OUTSIDE_LABEL = -1
INDEX_COLUMNS = ("case", "slice", "y0", "x0", "foreground_pixels")
DELETE_FIX = "delete the folder {folder}; the next build recreates it"
FLOAT32 = "float32"


@dataclass(frozen=True)
class CacheKey:
    """Everything that changes a cached value; ``digest()`` names the cache folder.

    ``frozen_sha256`` hashes the weights that actually compute the cached value (input
    adapter and frozen encoder part): it covers random or fine-tuned weights and a learned
    channel mix, which ``weights_sha256`` (the base weight file) alone would not.
    ``view`` k > 0 caches the windows augmented by ``augmentation`` with the k-th draw
    (``samnet.preprocessing.cache.views``); 0 caches them as they are.
    ``compute_dtype`` is the precision the encoder ran in (``samnet.core.precision``):
    "float16" under CUDA's autocast, "float32" on CPU. Autocast rounds every layer's
    products to float16, not only the stored output, so the two hold different values and
    neither reads the other's: a fold's inputs then follow from its plan and device, not
    from which machine happened to build the cache first.
    ``images``: the cache also stores the windows (``images.npy``), for a network with an
    image branch.
    """

    backbone: str
    weights_sha256: str | None
    frozen_sha256: str
    input_size: int
    intensity_mapping: str
    in_channels: int
    data_identifier: str
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    normalization_schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    prefix_stages: int | None
    format_version: int = CACHE_FORMAT_VERSION
    view: int = 0
    augmentation: str | None = None
    compute_dtype: str = FLOAT32
    images: bool = False

    def digest(self) -> str:
        return key_digest(dataclasses.asdict(self))


def key_digest(inputs: dict[str, Any]) -> str:
    """Short hash of key inputs; equal for a ``CacheKey`` and its JSON round trip."""
    left_out = []
    if inputs.get("view", 0) == 0:
        # The unaugmented cache is named by what computes it alone.
        left_out += ["view", "augmentation"]
    if inputs.get("compute_dtype", FLOAT32) == FLOAT32:
        # float32 caches keep the names they had before the key recorded the precision.
        left_out.append("compute_dtype")
    if not inputs.get("images", False):
        # Caches without the windows keep the names they had before they could hold them.
        left_out.append("images")
    inputs = {k: v for k, v in inputs.items() if k not in left_out}
    text = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EmbeddingCache:
    """Read access to a complete cache folder; arrays stay memory-mapped, rows load on demand.

    Attributes:
      folder: the cache folder.
      info: the parsed ``cache.json``.
      cases: case identifiers, in the order ``index``'s case numbers refer to.
      index: ``N x 5`` int32, columns ``INDEX_COLUMNS``.
      has_images: whether it stores the windows (``images``).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        info_file = self.folder / CACHE_INFO_FILE
        fix = DELETE_FIX.format(folder=self.folder)
        try:
            self.info = json.loads(info_file.read_text())
            self._features = np.load(self.folder / "features.npy", mmap_mode="r")
            self._labels = np.load(self.folder / "labels.npy", mmap_mode="r")
            self.index = np.load(self.folder / "index.npy")
            self.has_images = bool(self.info["key_inputs"].get("images", False))
            expected = {
                "features": (self.info["windows"], *self.info["feature_shape"]),
                "labels": (
                    self.info["windows"],
                    *self.info["key_inputs"]["patch_size"],
                ),
                "index": (self.info["windows"], len(INDEX_COLUMNS)),
            }
            actual = {
                "features": self._features.shape,
                "labels": self._labels.shape,
                "index": self.index.shape,
            }
            if self.has_images:
                self._images = np.load(self.folder / "images.npy", mmap_mode="r")
                expected["images"] = (self.info["windows"], *self.info["image_shape"])
                actual["images"] = self._images.shape
            digest = key_digest(self.info["key_inputs"])
            version = self.info["key_inputs"]["format_version"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SamnetError(
                info_file, f"cache cannot be read ({error})", fix
            ) from None
        if version != CACHE_FORMAT_VERSION or digest != self.folder.name:
            raise SamnetError(
                info_file,
                f"its key inputs (hash {digest}, format {version}) do not match the folder "
                f"name {self.folder.name} and format {CACHE_FORMAT_VERSION}",
                fix,
            )
        for name, shape in actual.items():
            if tuple(shape) != tuple(expected[name]):
                raise SamnetError(
                    info_file,
                    f"states {name} of shape {expected[name]}, {name}.npy holds {shape}",
                    fix,
                )
        self.cases: tuple[str, ...] = tuple(self.info["cases"])

    def __len__(self) -> int:
        return len(self.index)

    def rows_for_cases(self, case_ids: Iterable[str]) -> np.ndarray:
        """Row numbers (ascending, int64) of every window of the given cases."""
        numbers = {case: number for number, case in enumerate(self.cases)}
        wanted = list(case_ids)
        missing = sorted(set(wanted) - set(numbers))
        if missing:
            raise SamnetError(
                self.folder / CACHE_INFO_FILE,
                f"cases {missing} are not in this cache",
                DELETE_FIX.format(folder=self.folder) + " from the preprocessed data",
            )
        selected = np.isin(self.index[:, 0], [numbers[case] for case in wanted])
        return np.flatnonzero(selected)

    def embeddings(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Cached features of ``rows`` as float32, ``B x D x h x w`` (full embeddings)."""
        return torch.from_numpy(self._features[np.asarray(rows)].astype(np.float32))

    def images(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The windows of ``rows`` as float32, ``B x C x H x W`` (a cache that stores them)."""
        if not self.has_images:
            raise ValueError(
                f"{self.folder} holds no images: it was built for a network without an "
                "image branch"
            )
        return torch.from_numpy(self._images[np.asarray(rows)].astype(np.float32))

    def labels(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Labels of ``rows``, ``B x 1 x H x W`` long; ``OUTSIDE_LABEL`` kept.

        nnU-Net's training maps -1 to background (``RemoveLabelTansform(-1, 0)``).
        """
        labels = self._labels[np.asarray(rows)].astype(np.int64)
        return torch.from_numpy(labels).unsqueeze(1)


def sample_batches(
    rows: np.ndarray, batch_size: int, seed: int
) -> Iterator[np.ndarray]:
    """Endless batches of ``batch_size`` rows: shuffled passes over ``rows``, seeded.

    Each pass uses every row once before any repeats; a batch may span two passes.
    """
    if len(rows) == 0:
        raise ValueError("no rows to sample batches from")
    generator = np.random.default_rng(seed)
    queue = np.empty(0, dtype=np.int64)
    while True:
        while len(queue) < batch_size:
            queue = np.concatenate([queue, generator.permutation(rows)])
        batch, queue = queue[:batch_size], queue[batch_size:]
        yield batch
