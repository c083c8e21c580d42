"""Any nnU-Net trainer under ``torchrun``: DDP inside a fold, on one node or several.

nnU-Net's own DDP (``nnUNetv2_train -num_gpus``) starts its workers with ``mp.spawn`` on one
node, and its trainer takes the device from the global rank (``cuda:RANK``, which does not
exist on a second node) and wraps the network with ``device_ids=[RANK]`` (which DDP
refuses for a CPU module). ``DistributedTrainerMixin`` fixes exactly that, in a subclass
of the same name (``samnet.trainers.variants.training_variant``), so results folders,
checkpoints and nnU-Net's trainer lookup are unchanged:

- the device is ``cuda:LOCAL_RANK``, or the CPU (gloo) where training runs on CPUs;
- DDP with ``static_graph``: only parameters that train are synchronised, and trainable
  ones a step does not use (SAM's IoU head beside a class head) raise no error;
- each rank draws its batches from its own seed (fold, rank and epoch);
- while rank 0 works alone (builds the embedding cache, takes the fold's lock), the
  others wait at a barrier without NCCL's 10-minute timeout (``patient_barrier``);
- only rank 0 writes files (nnU-Net already keeps checkpoints, logs, plots and
  ``debug.json`` to rank 0; its copies of ``plans.json``, ``dataset.json`` and the
  fingerprint are kept to rank 0 here).

The rest is nnU-Net's: the global batch split over the ranks, Dice over the whole global
batch, losses gathered for its log, validation cases sharded over the ranks.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import empty_cache
from torch.nn.parallel import DistributedDataParallel

from samnet.trainers.sam_trainer import NNUNET_DEFAULT_DEVICE

# Base of every rank's data seed (numpy and random of the training process).
DATA_SEED = 12345
# How long ranks wait for rank 0 at a patient barrier: longer than any embedding cache
# build or lock wait, far past NCCL's 10 minutes. Should rank 0 die meanwhile, torchrun
# ends the other ranks, so this limit never has to catch a failure.
PATIENT_TIMEOUT = timedelta(days=7)
# The group of patient_barrier, with the default group it was made in (a group dies
# with the default one: destroy_process_group() and a new init make it stale).
_patient: dict[str, object] = {}


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that ``torchrun`` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_device(requested: torch.device) -> torch.device:
    """This rank's device: the node-local GPU ``LOCAL_RANK`` for CUDA, else the CPU."""
    if requested.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def join_process_group(requested: torch.device) -> bool:
    """Join the group ``torchrun`` set up (NCCL on GPUs, gloo on CPUs); False when this
    process was started alone."""
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        device = rank_device(requested)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    # Made now, while every rank is here: making a group waits for all of them, within
    # the default timeout.
    _patient["world"] = dist.group.WORLD
    _patient["group"] = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
    return True


def is_rank_zero() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank, where there are several."""
    if dist.is_initialized():
        dist.barrier()


def patient_barrier() -> None:
    """Wait for every rank, where there are several, for up to ``PATIENT_TIMEOUT``: for
    rank 0 doing something long alone, which the group's own timeout would cut short.

    The wait runs on the gloo group ``join_process_group`` made (CPU, next to NCCL too):
    the default group's timeout and NCCL's watchdog stay as they are for training. In a
    group that samnet did not join (nnU-Net's own ``-num_gpus``), it is a plain barrier.
    """
    if not dist.is_initialized():
        return
    patient = (
        _patient.get("group") if _patient.get("world") is dist.group.WORLD else None
    )
    dist.barrier(group=patient)


@contextlib.contextmanager
def rank_zero_first(enabled: bool) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a shared cache, for hours on a large
    dataset), then the others do: they wait at a ``patient_barrier``."""
    first = is_rank_zero()
    if enabled and not first:
        patient_barrier()
    yield
    if enabled and first:
        patient_barrier()


def data_seed(fold: int, rank: int, epoch: int) -> int:
    """A seed of its own for each fold, rank and starting epoch (a resumed run draws anew)."""
    return int(
        np.random.SeedSequence([DATA_SEED, fold, rank, epoch]).generate_state(1)[0]
    )


class DistributedTrainerMixin(nnUNetTrainer):
    """nnU-Net's trainer steps under torchrun; see the module docstring.

    A subclass of ``nnUNetTrainer`` that goes behind a trainer class, so that it sits
    right above ``nnUNetTrainer`` in the MRO (``training_variant``): it changes nnU-Net's
    own steps, and the trainer's overrides of them still run on every rank.
    """

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = NNUNET_DEFAULT_DEVICE,
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_ddp:
            self.device = rank_device(device)
            if self.device.type != "cuda":
                self.grad_scaler = None

    def initialize(self) -> None:
        if not self.is_ddp or self.was_initialized:
            return super().initialize()
        # nnU-Net would wrap with device_ids=[global rank]; it builds everything else alone.
        self.is_ddp = False
        try:
            super().initialize()
        finally:
            self.is_ddp = True
        self._set_batch_size_and_oversample()  # this rank's share of the global batch
        if self.device.type == "cuda":
            self.network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
        self.network = DistributedDataParallel(
            self.network,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            static_graph=True,
        )
        # Dice gathered over every rank's part of the batch
        self.loss = self._build_loss()

    def on_train_start(self) -> None:
        if not self.is_ddp:
            return super().on_train_start()
        seed = data_seed(self.fold, self.local_rank, self.current_epoch)
        np.random.seed(seed)
        random.seed(seed)
        if self.local_rank == 0:
            return super().on_train_start()
        self._start_without_writing()

    def _start_without_writing(self) -> None:
        """nnU-Net's ``on_train_start`` on a rank other than 0: its steps less what rank 0
        alone does (unpacking the dataset, and writing the copies of ``plans.json``,
        ``dataset.json`` and the fingerprint, the architecture plot and ``debug.json``
        into the folder all ranks share). The barrier is nnU-Net's: every rank waits
        there for rank 0's unpacking."""
        if not self.was_initialized:
            self.initialize()
        self.dataloader_train, self.dataloader_val = self.get_dataloaders()
        self.set_deep_supervision_enabled(self.enable_deep_supervision)
        empty_cache(self.device)
        dist.barrier()
