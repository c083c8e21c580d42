"""samnet's trainers under the names nnU-Net's ``-tr`` looks for."""

from samnet.trainers.cached_trainer import nnUNetTrainerSAMCached
from samnet.trainers.fewshot_trainer import nnUNetTrainerSAMFewShot
from samnet.trainers.sam_trainer import nnUNetTrainerSAM

__all__ = ["nnUNetTrainerSAM", "nnUNetTrainerSAMCached", "nnUNetTrainerSAMFewShot"]
