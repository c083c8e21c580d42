"""The rules for what trains and how: few-shot mode, prompts, encoder mode, PEFT and
learning rate.

Each returns its value and the reason for it; few-shot mode and prompts also return the
short text their decision shows (``Planner`` records them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samnet.core.errors import SamnetError
from samnet.core.sam_plan import ENCODER_MODES, PROMPT_KINDS, FewShotPlan
from samnet.fewshot.support_selection import read_support_file
from samnet.models.backbone_spec import BackboneSpec
from samnet.models.peft import PeftConfig
from samnet.planners.evidence import (
    COST_MODEL_ACCURACY,
    FEW_LABELLED_CASES,
    FEW_SHOT_MAX_LABELLED_SLICES,
    FEW_SHOT_SHOTS,
    user_reason,
)
from samnet.planners.fingerprint import SamFingerprint
from samnet.planners.training import ModeEstimate

LORA_RANK = 4
NEW_HEADS = ("class_head", "input_adapter")
# The encoder modes that can train each --peft choice (samnet.core.sam_plan.PEFT_CHOICES).
MODES_FOR_PEFT = {
    "lora": ("trained", "prefix_cached"),
    "adapter": ("trained", "prefix_cached"),
    "full": ("trained",),
    "decoder": ("cached",),
}


def few_shot_rule(
    fp: SamFingerprint, overrides: dict[str, Any]
) -> tuple[FewShotPlan | None, str, str]:
    """Few-shot mode with K support slices, or None (train on every labelled slice); the
    decision's text and reason."""
    shots, seed = overrides.get("few_shot"), overrides.get("few_shot_seed") or 0
    slices = fp.labelled_slices
    if overrides.get("support"):
        support = read_support_file(overrides["support"])
        if shots is not None and shots != len(support):
            raise SamnetError(
                overrides["support"],
                f"lists {len(support)} support slices, but --few-shot asks for {shots}",
                "drop --few-shot (the file sets K) or make them agree",
            )
        few_shot = FewShotPlan(
            len(support),
            seed,
            tuple((s.case, s.slice) for s in support),
            str(Path(overrides["support"]).resolve()),
        )
        because = f"set by the user (--support): the {len(support)} slices it lists"
    elif shots is not None:
        few_shot = FewShotPlan(shots, seed)
        because = f"{user_reason('few_shot')}: {shots} slices of each fold's training cases, chosen automatically"
    elif slices <= FEW_SHOT_MAX_LABELLED_SLICES and not overrides.get("prompts"):
        shots = max(1, min(FEW_SHOT_SHOTS, slices * 4 // 5))
        few_shot = FewShotPlan(shots, seed)
        because = (
            f"only {slices} labelled slices, so a fold trains on at most {slices * 4 // 5}: "
            f"no more than a few-shot support set. Xie et al. 2024: prompts from a few "
            f"labelled slices match supervised nnU-Net with an order of magnitude fewer labels; "
            f"K = {shots}, chosen in each fold's training cases"
        )
    else:
        few_shot = None
        because = (
            f"{slices} labelled slices: the decoder trains on all of them "
            f"(few-shot mode is for at most {FEW_SHOT_MAX_LABELLED_SLICES}; --few-shot K forces it)"
        )
    shown = "off"
    if few_shot is not None:
        shown = f"K={few_shot.shots}, " + (
            "listed" if few_shot.support else f"automatic (seed {few_shot.seed})"
        )
    return few_shot, shown, because


def prompts_rule(
    overrides: dict[str, Any], few_shot: FewShotPlan | None
) -> tuple[tuple[str, ...] | None, str, str]:
    """The prompt kinds to train SAM to follow (``--prompts``), or None: prompt-free; the
    decision's text and reason."""
    given = overrides.get("prompts")
    if given is None:
        return (
            None,
            "off",
            (
                "prompt-free: samnet segments new images without an annotator; "
                "--prompts box|point|box,point trains SAM to follow an annotator's "
                "boxes or clicks instead (Gu et al. 2024's prompt-based setting)"
            ),
        )
    kinds = tuple(kind.strip() for kind in given.split(","))
    if not set(kinds) <= set(PROMPT_KINDS):
        raise SamnetError(
            None,
            f"--prompts {given}: the kinds are {', '.join(PROMPT_KINDS)}",
            "use --prompts box, --prompts point or --prompts box,point",
        )
    if few_shot is not None:
        raise SamnetError(
            None,
            "few-shot mode and prompted training are different models",
            "drop --prompts, or drop --few-shot/--support",
        )
    return (
        kinds,
        ", ".join(kinds),
        (
            f"{user_reason('prompts')}: one {' or '.join(kinds)} per object on each "
            "training slice, simulated from the reference as an annotator gives them "
            "(boxes jittered by up to 10% of their size; one click inside, one just "
            "outside)"
        ),
    )


def encoder_mode_rule(
    fp: SamFingerprint,
    estimates: dict[str, ModeEstimate],
    max_hours: float,
    steps: int,
    overrides: dict[str, Any],
    few_shot: FewShotPlan | None,
    prompts: tuple[str, ...] | None,
) -> tuple[str, str]:
    """The most capable encoder mode that fits ``max_hours`` per fold and can train the
    user's ``--peft``; a frozen, cached encoder for few-shot mode, prompts or few labels.

    ``estimates``: ``training.mode_estimates`` for ``steps`` optimizer steps.
    """
    allowed = MODES_FOR_PEFT.get(overrides.get("peft"), ENCODER_MODES)
    asked = overrides.get("encoder_mode")
    if asked not in (None, *allowed):
        raise SamnetError(
            None,
            f"--encoder-mode {asked} cannot train --peft {overrides['peft']}",
            f"use --encoder-mode {' or '.join(allowed)}, or leave it to the planner",
        )
    if few_shot is not None or prompts is not None:
        name, option = (
            ("few-shot mode", "--few-shot/--support")
            if few_shot is not None
            else ("prompted training", "--prompts")
        )
        if "cached" not in allowed or asked not in (None, "cached"):
            raise SamnetError(
                None,
                f"{name} trains the decoder on a frozen, cached encoder, not "
                f"--peft {overrides.get('peft')} / --encoder-mode {asked}",
                f"drop --peft and --encoder-mode (or use --peft decoder), or drop {option}",
            )
        return "cached", (
            "few-shot mode (Xie et al. 2024): the encoder is frozen and its embeddings of the support slices are computed once; only the decoder and the prompt projection train"
            if few_shot is not None
            else "prompted training: the encoder is frozen and its embeddings are cached; the mask decoder learns to follow the prompts"
        )
    if fp.labelled_cases <= FEW_LABELLED_CASES and "cached" in allowed:
        return "cached", (
            f"only {fp.labelled_cases} labelled cases: Xie et al. 2024 train the decoder on cached embeddings of the frozen encoder, which does not overfit a few labels"
        )
    fitting = [m for m in allowed if estimates[m].hours <= max_hours]
    hours = ", ".join(
        f"{m} {estimates[m].hours:.1f} h (batch {estimates[m].batch_size})"
        for m in allowed
    )
    within = (
        f"the most capable mode within {max_hours:g} h per fold"
        if fitting
        else f"none fits {max_hours:g} h per fold: the cheapest"
    )
    return fitting[0] if fitting else allowed[-1], (
        f"{within} (Gu et al.: PEFT inside the encoder is best); "
        f"estimated for {steps} steps by the cost model ({COST_MODEL_ACCURACY}): {hours}"
    )


def peft_rule(
    mode: str, spec: BackboneSpec, overrides: dict[str, Any]
) -> tuple[PeftConfig, str]:
    """What trains in encoder mode ``mode``: the user's ``--peft`` or, by default, LoRA in
    encoder and decoder, or the decoder alone when the encoder is cached."""
    config, because = _peft(
        overrides.get("peft") or ("decoder" if mode == "cached" else "lora"),
        overrides.get("lora_rank") or LORA_RANK,
        mode,
        spec,
    )
    if overrides.get("peft"):
        because = f"{user_reason('peft')}: {because}"
    return config, because


def _peft(
    method: str, rank: int, mode: str, spec: BackboneSpec
) -> tuple[PeftConfig, str]:
    blocks = (
        tuple(range(-spec.last_stage_blocks, 0)) if mode == "prefix_cached" else None
    )
    # A cached encoder input must not change: the input adapter's channel mix stays at its
    # channel-mean start unless the encoder runs in every step.
    heads = NEW_HEADS if mode == "trained" else ("class_head",)
    if method == "decoder":
        return PeftConfig(method="full", parts=("decoder",), trainable_extra=heads), (
            "the encoder is frozen and cached: the whole mask decoder and the new class head train (Xie et al. 2024)"
        )
    if method == "full":
        return PeftConfig(
            method="full", parts=("encoder", "decoder"), trainable_extra=heads
        ), "every weight trains (asked for)"
    where = "the last encoder stage" if blocks else "every encoder block"
    config = PeftConfig(
        method=method,
        parts=("encoder", "decoder"),
        lora_rank=rank,
        lora_alpha=float(rank),
        lora_targets=("encoder_attention", "decoder_attention"),
        encoder_blocks=blocks,
        trainable_extra=heads,
    )
    return (
        config,
        f"Gu et al. 2024: PEFT in both encoder and decoder is the best strategy; {method} (rank {rank}, as SAMed) in {where} and the decoder",
    )


def learning_rate_rule(peft: PeftConfig) -> tuple[float, str]:
    """MedSAM's rate when the encoder is fine-tuned fully, a larger one otherwise."""
    if "encoder" in peft.fully_trained_parts:
        return 1e-4, "MedSAM's rate for full fine-tuning of a pre-trained encoder"
    return (
        5e-4,
        "only PEFT weights, the decoder and new heads train: they start from zero or small weights and need a larger step than full fine-tuning (1e-4)",
    )
