"""nnUNetTrainerSAMCached: trains from an embedding cache of the frozen encoder front.

The longest frozen front of the encoder (after ``apply_peft``) is computed once per
window into ``samnet.preprocessing.cache.embedding_cache`` and read in every step:

- the whole encoder frozen (plan ``encoder_mode`` "cached", Xie et al. 2024): the cache
  holds image embeddings, only the decoder side trains;
- LoRA/adapters in the last stage(s) (``prefix_cached``): the cache holds the output of
  the frozen stages before them; the adapted stages and the decoder train.

Batches are nnU-Net's sliding windows of each slice, a third of each batch drawn from
windows with foreground, as nnU-Net's ``oversample_foreground_percent``. A cached input
cannot be augmented afterwards; with the plan's ``cached_views`` N, training batches also
draw from N augmented views of every window, cached once through this trainer's own
``get_training_transforms`` (``samnet.preprocessing.cache.views``); validation batches
draw from the windows as they are. Their ``data`` is ``EncodedImages``: the
network decodes what the batch holds (after the encoder's remaining stages, for a
prefix cache; with the windows themselves, which the cache then stores, when the plan
has an image branch), so nnU-Net's training and validation steps run unchanged. Validation
after training is the predictor's, on whole images, like every other trainer's.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from samnet.core.errors import SamnetError
from samnet.models.encoder_prefix import encoder_stages, frozen_prefix_stages
from samnet.models.network import EncodedImages
from samnet.preprocessing.cache.build import build_embedding_cache
from samnet.preprocessing.cache.embedding_cache import (
    OUTSIDE_LABEL,
    EmbeddingCache,
    sample_batches,
)
from samnet.preprocessing.cache.views import CacheView, ViewedCaches
from samnet.trainers.distributed import data_seed, rank_zero_first
from samnet.trainers.sam_trainer import nnUNetTrainerSAM


class nnUNetTrainerSAMCached(nnUNetTrainerSAM):
    """``nnUNetTrainerSAM`` whose training batches come from the embedding cache."""

    def get_dataloaders(self) -> tuple[Iterator[dict], Iterator[dict]]:
        # Sets the predictor's mirroring axes, as nnU-Net's own get_dataloaders does.
        self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        network = self.sam_network
        if any(p.requires_grad for p in network.input_adapter.parameters()):
            raise SamnetError(
                None,
                "the input adapter trains, so the encoder's input changes and cannot be cached",
                "re-plan with samnet_plan (cached plans keep the adapter frozen) or use nnUNetTrainerSAM",
            )
        encoder = network.sam.image_encoder
        stages = frozen_prefix_stages(encoder)
        prefix_stages = None if stages == len(encoder_stages(encoder)) else stages
        views = [None, *self._augmented_views()]
        with rank_zero_first(self.is_ddp):
            caches = [
                build_embedding_cache(
                    network,
                    network.base_weights,
                    self.configuration_manager,
                    self.preprocessed_dataset_folder_base,
                    prefix_stages=prefix_stages,
                    fast=self.device.type == "cpu",
                    view=view,
                )
                for view in views
            ]
        self.cache = ViewedCaches(caches)
        training_cases, validation_cases = self.do_split()
        seed = data_seed(self.fold, self.local_rank, self.current_epoch)
        return (
            self._batches(self.cache, training_cases, seed, prefix_stages),
            self._batches(caches[0], validation_cases, seed + 1, prefix_stages),
        )

    def _augmented_views(self) -> list[CacheView]:
        """The plan's ``cached_views``, each through nnU-Net's training transforms for the
        window (patch) size, as this trainer's ``get_training_transforms`` makes them."""
        if not self.sam_plan.cached_views:
            return []
        rotation, dummy_2d, _, mirror_axes = (
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        )
        labels = self.label_manager
        transforms = self.get_training_transforms(
            self.configuration_manager.patch_size,
            rotation,
            None,  # no deep supervision: SAM's head has one output
            mirror_axes,
            dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm,
            is_cascaded=self.is_cascaded,
            foreground_labels=labels.foreground_labels,
            regions=labels.foreground_regions if labels.has_regions else None,
            ignore_label=labels.ignore_label,
        )
        return [
            CacheView(number, transforms, type(self).__name__)
            for number in range(1, self.sam_plan.cached_views + 1)
        ]

    def _batches(
        self,
        cache: EmbeddingCache | ViewedCaches,
        cases: list[str],
        seed: int,
        prefix_stages: int | None,
    ) -> Iterator[dict]:
        """Endless ``{"data", "target"}`` batches of the cases' windows in ``cache``: ``data`` their
        cached features (of the encoder's first ``prefix_stages`` stages, or the whole
        encoder's), and the windows for the plan's image branch, as ``EncodedImages``;
        ``target`` ``B x 1 x H x W`` labels (outside -> 0).

        ``seed`` is the fold's, rank's and starting epoch's: ranks draw different
        batches, and a resumed run does not repeat the first epochs' batches.
        """
        patch_size = tuple(self.configuration_manager.patch_size)
        rows = cache.rows_for_cases(cases)
        foreground = rows[cache.index[rows, 4] > 0]
        uniform_count = round(
            self.batch_size * (1 - self.oversample_foreground_percent)
        )
        if len(foreground) == 0 or uniform_count == self.batch_size:
            streams = [sample_batches(rows, self.batch_size, seed)]
        else:
            streams = [
                sample_batches(rows, uniform_count, seed),
                sample_batches(foreground, self.batch_size - uniform_count, seed + 2),
            ]
        for parts in zip(*streams):
            batch = np.concatenate(parts)
            target = cache.labels(batch)
            target[target == OUTSIDE_LABEL] = 0
            features = cache.embeddings(batch)
            images = cache.images(batch) if self.sam_plan.image_branch else None
            data = EncodedImages(features, patch_size, prefix_stages, images=images)
            yield {"data": data, "target": target}
