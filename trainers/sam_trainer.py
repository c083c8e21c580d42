"""nnUNetTrainerSAM: nnU-Net's trainer with the SAM network its plan's ``sam`` block describes.

Everything else is nnU-Net's: data loading and augmentation, Dice + CE loss, the epoch
loop, AMP on CUDA, validation through its sliding-window predictor. The hooks it
overrides:

- ``build_network_architecture``: backbone, input size and PEFT from the plan (also what
  nnU-Net's predictor calls, so prediction rebuilds the same network);
- ``set_deep_supervision_enabled``: SAM has one output, so nothing to switch;
- ``configure_optimizers``: AdamW over the trained parameters, warm-up then decay;
- ``save_checkpoint``: only what trains plus the base weights' sha256, written atomically;
- ``_do_i_compile``: never ``torch.compile`` (why: the method), for every SAM trainer.

samnet's commands find it through ``samnet.core.paths.register_trainers`` (which adds
``trainers/nnunet_lookup`` to ``nnUNet_extTrainer``); nnU-Net's own CLI finds it with
``nnUNet_extTrainer`` pointing at that folder::

    nnUNetv2_train Dataset004_Hippocampus sam_2d 0 -p samnetPlans -tr nnUNetTrainerSAM
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import (
    ConfigurationManager,
    PlansManager,
)
from segment_anything.modeling import MaskDecoder
from torch import nn

from samnet.core.atomic import atomic_file
from samnet.core.cpu_numerics import flush_denormals
from samnet.core.errors import SamnetError
from samnet.core.sam_plan import SamPlan
from samnet.models.class_head import ClassHead
from samnet.models.lr_schedule import WarmupDecayLR
from samnet.models.network import SamSegmentationNetwork, build_network
from samnet.models.peft import PeftConfig, apply_peft, trainable_parameters

# nnUNetTrainer's own default device.
NNUNET_DEFAULT_DEVICE = torch.device("cuda")


def sam_plan_of(configuration_manager: ConfigurationManager) -> SamPlan:
    """The ``sam`` block of a SAM configuration; a clear error for any other configuration."""
    block = configuration_manager.configuration.get("sam")
    if block is None:
        raise SamnetError(
            None,
            "this configuration has no 'sam' block, so a SAM trainer cannot train it",
            "use a SAM configuration (sam_2d) of samnetPlans, made by samnet_plan",
        )
    return SamPlan.from_dict(block)


def network_from_plan(
    plan: SamPlan,
    num_input_channels: int,
    num_output_channels: int,
    head: Callable[[MaskDecoder, int], nn.Module] = ClassHead,
) -> SamSegmentationNetwork:
    """The network a ``sam`` block describes: backbone, input size, head and image
    branch, gradient checkpointing of the encoder's blocks, then PEFT."""
    network, _ = build_network(
        plan.backbone,
        num_input_channels,
        num_output_channels,
        image_size=plan.input_size,
        checkpoint=plan.checkpoint,
        head=head,
        gradient_checkpointing=plan.gradient_checkpointing,
        image_branch=plan.image_branch,
    )
    return apply_peft(network, PeftConfig.from_dict(plan.peft))


class nnUNetTrainerSAM(nnUNetTrainer):
    """SAM fine-tuned as the plan's ``sam`` block says; the encoder runs in every step."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = NNUNET_DEFAULT_DEVICE,
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        flush_denormals()  # for nnU-Net's own commands, which skip configure_environment
        self.sam_plan = sam_plan_of(self.configuration_manager)
        self.enable_deep_supervision = False
        self.initial_lr = self.sam_plan.optimizer.learning_rate
        self.weight_decay = self.sam_plan.optimizer.weight_decay
        self.num_epochs = self.sam_plan.budget.epochs
        self.num_iterations_per_epoch = self.sam_plan.budget.iterations_per_epoch

    @staticmethod
    def build_network_architecture(
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        return network_from_plan(
            sam_plan_of(configuration_manager), num_input_channels, num_output_channels
        )

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """nnU-Net's augmentation; test-time mirroring only where the plan allows it."""
        rotation, dummy_2d, initial_patch_size, mirror_axes = (
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        )
        if not self.sam_plan.test_time_mirroring:
            self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    def _do_i_compile(self) -> bool:
        """Never, for this trainer and every SAM trainer derived from it.

        nnU-Net compiles the network (and its Dice loss) on CUDA unless ``nnUNet_compile``
        says otherwise. No SAM trainer has been run compiled on a GPU, and the paths
        most likely to break or retrace are SAM's own: LoRA layers and adapter hooks in
        the encoder, its blocks' checkpointed forward passes, the cached trainers'
        ``EncodedImages`` inputs (a dataclass with or without a prefix, where the other
        trainers pass a tensor), the few-shot head's prototypes that change with every
        batch, the prompted trainer's prompts. Compiling also delays the first step (one
        to two minutes for LiteMedSAM's encoder on 2 CPU cores; on a GPU not measured).
        Eager is the path the tests cover; lift this once ``benchmarks/gpu_smoke.py``
        measures each SAM trainer compiled.
        """
        if os.environ.get("nnUNet_compile", "").lower() in ("true", "1", "t"):
            self.print_to_log_file(
                "INFO: torch.compile stays off for SAM trainers (nnUNetTrainerSAM."
                "_do_i_compile), whatever nnUNet_compile says"
            )
        return False

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """SAM has a single output: nothing to switch."""

    def configure_optimizers(self):
        optimizer_plan = self.sam_plan.optimizer
        optimizer = torch.optim.AdamW(
            trainable_parameters(self.sam_network),
            lr=self.initial_lr,
            weight_decay=self.weight_decay,
        )
        scheduler = WarmupDecayLR(
            optimizer,
            self.initial_lr,
            self.num_epochs,
            optimizer_plan.warmup_fraction,
            optimizer_plan.schedule,
        )
        return optimizer, scheduler

    @property
    def sam_network(self) -> SamSegmentationNetwork:
        """``self.network`` without its DDP wrapper (it is never compiled)."""
        return self.network.module if self.is_ddp else self.network

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint with a trained-only state, renamed into place when complete."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            "network_weights": self.sam_network.trained_state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": None
            if self.grad_scaler is None
            else self.grad_scaler.state_dict(),
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
        }
        with atomic_file(Path(filename)) as handle:
            torch.save(checkpoint, handle)
