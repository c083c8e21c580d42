"""The SAM planner: fingerprint + hardware (+ the user's overrides) -> a SAM plan, with reasons.

``Planner.plan`` applies the rules in order, each recorded as a ``Decision`` that says
why: the weights (``weights``), what SAM sees of an image (``geometry``), the training
budget and its cost (``training``), the batch and gradient checkpointing (``batch``), and
what trains (``modes``); ``evidence`` holds the numbers and texts they quote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samnet.core.sam_plan import Decision, OptimizerPlan, SamPlan, TrainingBudget
from samnet.models.backbones import get_backbone
from samnet.planners.batch import BatchLimits, dataset_batch_cap, require_fitting
from samnet.planners.evidence import user_reason
from samnet.planners.fingerprint import SamFingerprint
from samnet.planners.geometry import (
    downsampling_rule,
    input_size_rule,
    intensity_reason,
    patch_rule,
    resampling_text,
    slicing_reason,
)
from samnet.planners.hardware import Hardware
from samnet.planners.modes import (
    encoder_mode_rule,
    few_shot_rule,
    image_branch_rule,
    learning_rate_rule,
    peft_rule,
    prompts_rule,
)
from samnet.planners.training import (
    budget_rule,
    cached_views_rule,
    max_hours_rule,
    mirroring_rule,
    mode_estimates,
)
from samnet.planners.weights import backbone_rule, checkpoint_rule, pretrain_rule


@dataclass
class PlanResult:
    """A SAM plan and the nnU-Net configuration values it changes."""

    sam: SamPlan
    downsampling: float
    patch_size: tuple[int, int]
    batch_size: int


@dataclass
class Planner:
    """Applies the rules in order; ``overrides`` (CLI names) replace any rule's value."""

    fingerprint: SamFingerprint
    hardware: Hardware
    overrides: dict[str, Any] = field(default_factory=dict)
    # samnet_pretrain's weights for this dataset, by backbone name.
    pretrained_bases: dict[str, Path] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)

    def decide(self, what: str, value: Any, because: str) -> Any:
        """Record ``value`` (or the user's override of ``what``) with its reason."""
        if self.overrides.get(what) is not None:
            value, because = self.overrides[what], user_reason(what)
        self.decisions.append(Decision(what, value, because))
        return value

    def record(self, what: str, shown: Any, because: str) -> None:
        """Record a decision whose rule has applied the user's overrides itself."""
        self.decisions.append(Decision(what, shown, because))

    def plan(self) -> PlanResult:
        fp, hw, overrides = self.fingerprint, self.hardware, self.overrides
        backbone = self.decide("backbone", *backbone_rule(fp))
        spec = get_backbone(backbone)
        bases = self.pretrained_bases
        checkpoint = self.decide("checkpoint", *checkpoint_rule(spec, bases))
        pretrain = self.decide("pretrain", *pretrain_rule(spec, overrides, bases))
        self.decide("slicing_axis", fp.slicing_axis, slicing_reason(fp))
        input_size = self.decide("input_size", *input_size_rule(fp, hw, spec))
        factor = self.decide("downsampling", *downsampling_rule(fp, spec, input_size))
        spacing = tuple(s * factor for s in fp.in_plane_spacing)
        patch = self.decide("patch_size", *patch_rule(fp, input_size, factor))
        resampling = resampling_text(patch, input_size)
        self.decide("in_plane_spacing", spacing, resampling)
        self.decide("intensity_mapping", spec.normalization, intensity_reason(fp, spec))
        epochs, iterations, where = budget_rule(hw)
        epochs = self.decide("epochs", epochs, where)
        iterations = self.decide("iterations_per_epoch", iterations, where)
        few_shot, shown, because = few_shot_rule(fp, overrides)
        self.record("few_shot", shown, because)
        prompts, shown, because = prompts_rule(overrides, few_shot)
        self.record("prompts", shown, because)
        image_branch = self.decide(
            "image_branch", *image_branch_rule(overrides, few_shot, prompts)
        )
        max_hours = self.decide("max_hours", *max_hours_rule(hw))
        steps = epochs * iterations
        limits = BatchLimits(
            hw,
            dataset_batch_cap(fp, factor, patch),
            steps,
            fp.labelled_slices,
            max_hours,
        )
        estimates = mode_estimates(spec, input_size, limits, overrides)
        mode = self.decide(
            "encoder_mode",
            *encoder_mode_rule(
                fp, estimates, max_hours, steps, overrides, few_shot, prompts
            ),
        )
        estimate = estimates[mode]
        require_fitting(
            estimate.batch_size,
            estimate.cost,
            estimate.gradient_checkpointing,
            f"{spec.name} at {input_size} px in encoder mode {mode}",
            hw,
        )
        peft, because = peft_rule(mode, spec, overrides, image_branch)
        self.record("peft", peft.to_dict(), because)
        checkpointing = self.decide(
            "gradient_checkpointing",
            estimate.gradient_checkpointing,
            estimate.checkpointing_reason,
        )
        batch = self.decide("batch_size", estimate.batch_size, estimate.batch_reason)
        optimizer = OptimizerPlan(
            learning_rate=self.decide("learning_rate", *learning_rate_rule(peft))
        )
        mirroring = self.decide("test_time_mirroring", *mirroring_rule(hw))
        views = self.decide("cached_views", *cached_views_rule(mode))
        sam = SamPlan(
            backbone=backbone,
            checkpoint=checkpoint,
            input_size=input_size,
            slicing_axis=fp.slicing_axis,
            in_plane_spacing=spacing,
            resampling=resampling,
            intensity_mapping=spec.normalization,
            peft=peft.to_dict(),
            encoder_mode=mode,
            gradient_checkpointing=checkpointing,
            optimizer=optimizer,
            budget=TrainingBudget(epochs, iterations, batch),
            test_time_mirroring=mirroring,
            pretrain=pretrain,
            image_branch=image_branch,
            cached_views=views,
            few_shot=few_shot,
            prompts=prompts,
            decisions=tuple(self.decisions),
        )
        return PlanResult(sam, factor, tuple(patch), batch)
