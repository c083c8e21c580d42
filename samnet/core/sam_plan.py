"""The ``sam`` block of a SAM configuration in samnet's plans: what the trainers read.

``SAMPlanner`` writes one per SAM configuration (e.g. ``configurations["sam_2d"]["sam"]``
of ``samnetPlans.json``); the rest of that configuration is an ordinary nnU-Net 2d
configuration (spacing, patch size, normalisation, data identifier), so nnU-Net's
preprocessing, data loading and sliding-window prediction serve SAM unchanged.

Every field was chosen by a rule or by the user; ``decisions`` says which and why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samnet.core.errors import SamnetError

# How the image encoder takes part in training, most capable first: the planner's order
# of preference (Gu et al. 2024: PEFT inside the encoder is best), cheapest last.
# trained: every step runs the encoder (PEFT inside it trains, or it is frozen but not cached);
# prefix_cached: the encoder's frozen leading stages are cached, the adapted last stage(s)
#   and the decoder train (PEFT in encoder and decoder, Gu et al. 2024, affordable on CPU);
# cached: the encoder is frozen, its image embeddings are computed once per slice and read
#   from an on-disk cache, only the decoder side trains (Xie et al. 2024).
ENCODER_MODES = ("trained", "prefix_cached", "cached")
SCHEDULES = ("cosine", "poly")
# What a prompted model can be trained to follow (samnet.prompting.simulated.simulate_prompts).
PROMPT_KINDS = ("box", "point")


@dataclass(frozen=True)
class Decision:
    """One planning decision: ``what`` was set to ``value`` ``because`` of a rule or the user."""

    what: str
    value: Any
    because: str


@dataclass(frozen=True)
class OptimizerPlan:
    """AdamW with linear warm-up, then ``schedule`` decay to zero over the budget."""

    name: str = "AdamW"
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    schedule: str = "cosine"


@dataclass(frozen=True)
class TrainingBudget:
    """Optimizer steps (``epochs`` x ``iterations_per_epoch``) of ``batch_size`` slices."""

    epochs: int
    iterations_per_epoch: int
    batch_size: int


@dataclass(frozen=True)
class FewShotPlan:
    """Few-shot mode (Xie et al. 2024): K labelled slices prompt the decoder, nothing else trains it.

    Attributes:
      shots: K, the number of support slices.
      seed: seeds the automatic choice of support slices in each fold.
      support: the user's ``(case, slice)`` pairs (``samnet.fewshot.support_selection``), or None
        to choose K slices from each fold's training cases.
      support_file: the file ``support`` was read from, named in errors.
    """

    shots: int
    seed: int = 0
    support: tuple[tuple[str, int], ...] | None = None
    support_file: str | None = None

    def __post_init__(self) -> None:
        if self.support is not None:
            object.__setattr__(
                self, "support", tuple((str(c), int(s)) for c, s in self.support)
            )
        if self.shots < 1 or (
            self.support is not None and len(self.support) != self.shots
        ):
            raise SamnetError(
                None,
                f"sam.few_shot: shots {self.shots} must be at least 1 and equal the "
                "number of support slices listed",
                "re-plan with samnet_plan --few-shot K (and --support FILE)",
            )


@dataclass(frozen=True)
class SamPlan:
    """Everything a SAM trainer needs beyond nnU-Net's configuration.

    Attributes:
      backbone: a key of ``samnet.models.backbones.BACKBONES``.
      checkpoint: the base weight file, or None for the backbone's usual lookup.
      input_size: square side (px) the encoder sees; nnU-Net patches are resized to it.
      slicing_axis: axis of the original image SAM slices along (the out-of-plane,
        lowest-resolution one; nnU-Net's ``transpose_forward`` puts it first).
      in_plane_spacing: target spacing of the slices SAM sees (the configuration's
        ``spacing`` without its first, out-of-plane entry).
      resampling: how images reach ``in_plane_spacing`` and then ``input_size``.
      intensity_mapping: the backbone's input normalisation ("unit_range" or "sam_rgb").
      peft: ``samnet.models.peft.PeftConfig.to_dict()``.
      encoder_mode: one of ``ENCODER_MODES``.
      optimizer: see ``OptimizerPlan``.
      budget: see ``TrainingBudget``.
      test_time_mirroring: predict with nnU-Net's mirroring augmentation.
      gradient_checkpointing: the image encoder's blocks recompute their activations in
        the backward pass (``samnet.models.gradient_checkpointing``), so that a batch
        fits the GPU; False in plans made before this field.
      pretrain: continue pre-training the encoder on the dataset's own images
        (``samnet_pretrain``) before fine-tuning; False in plans made before this field.
      image_branch: the prompt-free head adds a small CNN's features of the input image
        to its upscaled mask features, for logits at the input's resolution
        (``samnet.models.image_branch``); the embedding cache then stores the windows
        too. False in plans made before this field.
      cached_views: augmented views of every window in the embedding cache, besides the
        window itself (``samnet.preprocessing.cache.views``): what the cached and
        prefix-cached trainers get of nnU-Net's augmentation. 0: none.
      few_shot: see ``FewShotPlan``; None trains on every labelled slice.
      prompts: the prompt kinds (``PROMPT_KINDS``) the model is trained to follow, one
        per object, simulated from the reference (Gu et al.'s prompt-based setting);
        None: prompt-free.
      decisions: every choice above with its reason, in planning order.
    """

    backbone: str
    checkpoint: str | None
    input_size: int
    slicing_axis: int
    in_plane_spacing: tuple[float, ...]
    resampling: str
    intensity_mapping: str
    peft: dict[str, Any]
    encoder_mode: str
    optimizer: OptimizerPlan
    budget: TrainingBudget
    test_time_mirroring: bool = True
    gradient_checkpointing: bool = False
    pretrain: bool = False
    image_branch: bool = False
    cached_views: int = 0
    few_shot: FewShotPlan | None = None
    prompts: tuple[str, ...] | None = None
    decisions: tuple[Decision, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.encoder_mode not in ENCODER_MODES:
            raise SamnetError(
                None,
                f"sam.encoder_mode {self.encoder_mode!r} is not one of {ENCODER_MODES}",
                "correct the sam block of the plans or re-plan with samnet_plan",
            )
        if self.prompts is not None and (
            not self.prompts or not set(self.prompts) <= set(PROMPT_KINDS)
        ):
            raise SamnetError(
                None,
                f"sam.prompts {list(self.prompts)} is not a list of {PROMPT_KINDS}",
                "correct the sam block of the plans or re-plan with samnet_plan --prompts",
            )
        if self.cached_views < 0:
            raise SamnetError(
                None,
                f"sam.cached_views {self.cached_views} is negative",
                "correct the sam block of the plans or re-plan with samnet_plan --cached-views N",
            )
        if self.optimizer.schedule not in SCHEDULES:
            raise SamnetError(
                None,
                f"sam.optimizer.schedule {self.optimizer.schedule!r} is not one of {SCHEDULES}",
                "correct the sam block of the plans or re-plan with samnet_plan",
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: str | Path | None = None
    ) -> SamPlan:
        """The plan from ``to_dict()`` output; ``source`` (the plans file) is named in errors."""
        try:
            _require_known_keys(cls, data, "sam")
            _require_known_keys(OptimizerPlan, data["optimizer"], "sam.optimizer")
            _require_known_keys(TrainingBudget, data["budget"], "sam.budget")
            return cls(
                **{
                    **data,
                    "in_plane_spacing": tuple(data["in_plane_spacing"]),
                    "optimizer": OptimizerPlan(**data["optimizer"]),
                    "budget": TrainingBudget(**data["budget"]),
                    "few_shot": _few_shot_from(data.get("few_shot")),
                    "prompts": None
                    if data.get("prompts") is None
                    else tuple(data["prompts"]),
                    "decisions": tuple(
                        Decision(**d) for d in data.get("decisions", ())
                    ),
                }
            )
        except SamnetError as error:
            raise SamnetError(source, error.problem, error.fix) from None
        except (KeyError, TypeError) as error:
            raise SamnetError(
                source,
                f"the sam block is incomplete or malformed ({error})",
                "re-plan with samnet_plan (or correct the sam block by hand)",
            ) from None


def _few_shot_from(data: Mapping[str, Any] | None) -> FewShotPlan | None:
    if data is None:
        return None
    _require_known_keys(FewShotPlan, data, "sam.few_shot")
    return FewShotPlan(**data)


def _require_known_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SamnetError(
            None, f"{where}: unknown keys {unknown}", f"use only {sorted(known)}"
        )


def json_ready(value: Any) -> Any:
    """Tuples to lists, recursively, so a plan survives a JSON round trip unchanged."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value
