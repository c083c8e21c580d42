"""samnet's trainers under the names nnU-Net's ``-tr`` looks for."""

from samnet.trainers.cached_trainer import nnUNetTrainerSAMCached
from samnet.trainers.fewshot_trainer import nnUNetTrainerSAMFewShot
from samnet.trainers.prompted_trainer import nnUNetTrainerSAMPrompted
from samnet.trainers.sam_trainer import nnUNetTrainerSAM
from samnet.trainers.support_slices_trainer import (
    nnUNetTrainerSupportSlices,
    nnUNetTrainerSupportSlices10x,
)

__all__ = [
    "nnUNetTrainerSAM",
    "nnUNetTrainerSAMCached",
    "nnUNetTrainerSAMFewShot",
    "nnUNetTrainerSAMPrompted",
    "nnUNetTrainerSupportSlices",
    "nnUNetTrainerSupportSlices10x",
]
