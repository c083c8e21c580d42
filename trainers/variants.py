"""Any nnU-Net trainer as samnet trains it: the same trainer, to nnU-Net, with samnet's
progress bar, checkpoints written whole or not at all and, under torchrun, its DDP.

nnU-Net saves a trainer's class name as ``trainer_name`` in every checkpoint, and
``nnUNetv2_predict`` and ``samnet_predict`` find the trainer by that name (samnet's
through ``trainers/nnunet_lookup``). The variant is a subclass under the same name and
module, so its checkpoints name the trainer they extend, and that trainer predicts them.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from samnet.trainers.checkpoints import AtomicCheckpointMixin
from samnet.trainers.distributed import DistributedTrainerMixin
from samnet.trainers.progress import EpochProgressMixin


def training_variant(
    trainer_class: type[nnUNetTrainer], distributed: bool
) -> type[nnUNetTrainer]:
    """``trainer_class`` with ``EpochProgressMixin`` and ``AtomicCheckpointMixin`` (unless
    it has it already, as the support-slice trainers do) in front of it and, when
    ``distributed``, ``DistributedTrainerMixin`` behind it (right above
    ``nnUNetTrainer`` in the MRO), under ``trainer_class``'s name and module."""
    front: tuple[type, ...] = (EpochProgressMixin,)
    if not issubclass(trainer_class, AtomicCheckpointMixin):
        front = (*front, AtomicCheckpointMixin)
    bases: tuple[type, ...] = (*front, trainer_class)
    if distributed:
        # nnUNetTrainer itself is DistributedTrainerMixin's base: no MRO puts it in front.
        bases = (
            (*front, DistributedTrainerMixin)
            if trainer_class is nnUNetTrainer
            else (*bases, DistributedTrainerMixin)
        )
    return type(
        trainer_class.__name__,
        bases,
        {"__module__": trainer_class.__module__, "__doc__": trainer_class.__doc__},
    )
