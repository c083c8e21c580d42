"""Augmented views in the embedding cache: windows augmented before the frozen encoder.

A frozen encoder does not commute with augmentation: flipping a cached embedding is not
the embedding of the flipped image (``benchmarks/sam_ablation.py`` measures how far
apart the two are). So a cached decoder gets augmentation only from windows augmented
before they are encoded: ``CacheView`` k runs every window and its label through the
trainer's own training transforms (nnU-Net's spatial and intensity augmentation) and is
cached as a cache of its own (``CacheKey.view``). ``ViewedCaches`` reads several as one.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from samnet.preprocessing.cache.embedding_cache import EmbeddingCache


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """numpy's and torch's global generators (which nnU-Net's transforms draw from) seeded
    with ``seed`` inside the block, restored after it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(state)


@dataclass(frozen=True)
class CacheView:
    """View ``number`` (1, 2, ...) of the cache: each window through ``transforms``.

    Attributes:
      number: which view; with a window's row it seeds the draw, so a rebuilt view is
        the same view.
      transforms: nnU-Net's training transforms for the window size (a
        ``batchgeneratorsv2`` transform taking ``image`` C x H x W and ``segmentation``
        1 x H x W tensors).
      augmentation: what ``transforms`` are, for the cache key (e.g. the trainer class
        that made them).
    """

    number: int
    transforms: Any
    augmentation: str

    def __call__(
        self, image: np.ndarray, label: np.ndarray, row: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The augmented ``C x H x W`` window and its ``H x W`` label."""
        digest = hashlib.sha256(f"{self.number}:{row}".encode()).digest()
        with seeded(int.from_bytes(digest[:4], "little")):
            augmented = self.transforms(
                image=torch.from_numpy(np.array(image, np.float32)),
                segmentation=torch.from_numpy(np.array(label, np.int16)[None]),
            )
        return (
            augmented["image"].numpy(),
            augmented["segmentation"][0].numpy().astype(np.int16),
        )


class ViewedCaches:
    """Caches of the same windows (view 0 and augmented views) read as one: rows run
    through view 0's windows, then view 1's, and so on. ``EmbeddingCache``'s reading
    interface (``index``, ``rows_for_cases``, ``embeddings``, ``images``, ``labels``,
    ``info``); a view's images are its augmented windows."""

    def __init__(self, caches: Sequence[EmbeddingCache]) -> None:
        self.caches = list(caches)
        # View 0's, with the build time and folders of every view.
        self.info = {
            **self.caches[0].info,
            "build_seconds": sum(cache.info["build_seconds"] for cache in self.caches),
            "folders": [cache.folder.name for cache in self.caches],
        }
        self.index = np.concatenate([cache.index for cache in self.caches])
        self.offsets = np.cumsum([0, *(len(cache) for cache in self.caches)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rows_for_cases(self, case_ids: Iterable[str]) -> np.ndarray:
        case_ids = list(case_ids)
        return np.concatenate(
            [
                cache.rows_for_cases(case_ids) + offset
                for cache, offset in zip(self.caches, self.offsets)
            ]
        )

    def embeddings(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        return self._gather(rows, EmbeddingCache.embeddings)

    def images(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        return self._gather(rows, EmbeddingCache.images)

    def labels(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        return self._gather(rows, EmbeddingCache.labels)

    def _gather(self, rows, read) -> torch.Tensor:
        """``read`` of each row from the cache it lies in, in the order of ``rows``."""
        rows = np.asarray(rows)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        parts, order = [], []
        for number in np.unique(which):
            selected = np.flatnonzero(which == number)
            parts.append(
                read(self.caches[number], rows[selected] - self.offsets[number])
            )
            order.append(selected)
        gathered = torch.cat(parts)
        return gathered[np.argsort(np.concatenate(order), kind="stable")]
