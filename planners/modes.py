"""The rules for what trains and how: few-shot mode, prompts, image branch, encoder mode,
PEFT and learning rate.

Each returns its value and the reason for it; few-shot mode and prompts also return the
short text their decision shows (``Planner`` records them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from samnet.core.errors import SamnetError
from samnet.core.peft_choices import (
    PEFT_CHOICES,
    PEFT_PARTS,
    parse_encoder_blocks,
    parse_lora_targets,
)
from samnet.core.sam_plan import ENCODER_MODES, PROMPT_KINDS, FewShotPlan
from samnet.fewshot.support_selection import read_support_file
from samnet.models.backbone_spec import BackboneSpec
from samnet.models.peft import PeftConfig, selected_encoder_blocks
from samnet.planners.evidence import (
    COST_MODEL_ACCURACY,
    FEW_LABELLED_CASES,
    FEW_SHOT_MAX_LABELLED_SLICES,
    FEW_SHOT_SHOTS,
    IMAGE_BRANCH_MEASURED,
    user_reason,
)
from samnet.planners.fingerprint import SamFingerprint
from samnet.planners.training import ModeEstimate

LORA_RANK = 4
NEW_HEADS = ("class_head", "input_adapter")
# The network's module for the plan's image_branch (samnet.models.image_branch): new, so
# it trains in every encoder mode.
IMAGE_BRANCH = "image_branch"
# The method --peft-parts gets when --peft names none, and the parts --peft gets when
# --peft-parts names none: LoRA in encoder and decoder (Gu et al. 2024's best), the
# decoder trained in full on a frozen, cached encoder (Xie et al. 2024).
DEFAULT_METHOD = {"encoder+decoder": "lora", "decoder": "full"}
DEFAULT_PARTS = "encoder+decoder"
# The encoder modes (samnet.core.sam_plan.ENCODER_MODES) that can train each
# (--peft, --peft-parts): an encoder that PEFT leaves alone is frozen and cached; LoRA or
# adapters in it train with it running (trained) or from a cache of its frozen front
# (prefix_cached); an encoder trained in full runs in every step.
MODES_FOR_PEFT = {
    ("full", "encoder+decoder"): ("trained",),
    ("lora", "encoder+decoder"): ("trained", "prefix_cached"),
    ("adapter", "encoder+decoder"): ("trained", "prefix_cached"),
    ("full", "decoder"): ("cached",),
    ("lora", "decoder"): ("cached",),
    ("adapter", "decoder"): ("cached",),
}
# The options that configure one method, by rule name, and that method.
METHOD_OPTIONS = {
    "lora_rank": "lora",
    "lora_targets": "lora",
    "adapter_ratio": "adapter",
    "adapter_placement": "adapter",
}
# The options that name the strategy, and every option peft_rule reads.
STRATEGY_OPTIONS = ("peft", "peft_parts")
PEFT_OPTIONS = (*STRATEGY_OPTIONS, *METHOD_OPTIONS, "encoder_blocks")


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


def image_branch_rule(
    overrides: dict[str, Any],
    few_shot: FewShotPlan | None,
    prompts: tuple[str, ...] | None,
) -> tuple[bool, str]:
    """Whether the prompt-free head gets a full-resolution image branch: off, as
    measured (``--image-branch yes`` turns it on). Few-shot mode and prompted training
    cannot take it: their batches carry no images, and prompted decoding does not run
    the prompt-free head."""
    if overrides.get("image_branch") and (few_shot is not None or prompts is not None):
        name, option = _special_mode(few_shot)
        raise SamnetError(
            None,
            f"--image-branch yes adds an image branch to the prompt-free class head, "
            f"which {name} does not use",
            f"drop --image-branch yes, or drop {option}",
        )
    return False, IMAGE_BRANCH_MEASURED


def _special_mode(few_shot: FewShotPlan | None) -> tuple[str, str]:
    """The name and options of few-shot mode (when ``few_shot``) or prompted training."""
    if few_shot is not None:
        return "few-shot mode", "--few-shot/--support"
    return "prompted training", "--prompts"


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
    request = requested_peft(overrides)
    allowed = ENCODER_MODES if request is None else MODES_FOR_PEFT[request]
    asked = overrides.get("encoder_mode")
    if asked not in (None, *allowed):
        raise SamnetError(
            None,
            f"--encoder-mode {asked} cannot train {_given(overrides, STRATEGY_OPTIONS)}",
            f"use --encoder-mode {' or '.join(allowed)}, or leave it to the planner "
            "(--peft-parts decoder trains the decoder on a cached encoder)",
        )
    if few_shot is not None or prompts is not None:
        name, option = _special_mode(few_shot)
        if "cached" not in allowed or asked not in (None, "cached"):
            raise SamnetError(
                None,
                f"{name} trains the decoder on a frozen, cached encoder, not "
                f"{_given(overrides, (*STRATEGY_OPTIONS, 'encoder_mode'))}",
                f"drop --peft and --encoder-mode (or use --peft-parts decoder), or drop {option}",
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
        if estimates[m].batch_size
        else f"{m} does not fit the GPU"
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


def requested_peft(overrides: dict[str, Any]) -> tuple[str, str] | None:
    """The strategy the user asked for with ``--peft`` and ``--peft-parts``: (method,
    parts), a key of ``MODES_FOR_PEFT``, the missing one completed by the defaults; None
    when neither was given (the encoder mode decides)."""
    method, parts = overrides.get("peft"), overrides.get("peft_parts")
    if method is None and parts is None:
        return None
    if method == "decoder":
        # The name --peft had for the decoder trained in full before --peft-parts.
        if parts not in (None, "decoder"):
            raise SamnetError(
                None,
                f"--peft decoder trains the decoder alone, not --peft-parts {parts}",
                "use --peft full (or lora, adapter) with --peft-parts encoder+decoder",
            )
        method, parts = "full", "decoder"
    parts = parts or DEFAULT_PARTS
    request = (method or DEFAULT_METHOD.get(parts), parts)
    if request not in MODES_FOR_PEFT:
        raise SamnetError(
            None,
            f"{_given(overrides, STRATEGY_OPTIONS)} is not a strategy samnet trains",
            f"--peft is one of {', '.join(PEFT_CHOICES)}; --peft-parts one of "
            f"{', '.join(PEFT_PARTS)}",
        )
    return request


def peft_rule(
    mode: str,
    spec: BackboneSpec,
    overrides: dict[str, Any],
    image_branch: bool = False,
) -> tuple[PeftConfig, str]:
    """What trains in encoder mode ``mode``: the user's ``--peft``/``--peft-parts`` with
    their method's options or, by default, LoRA in encoder and decoder, or the decoder
    alone when the encoder is cached; and the new heads, the ``image_branch`` too."""
    method, parts = requested_peft(overrides) or (
        ("full", "decoder") if mode == "cached" else ("lora", "encoder+decoder")
    )
    trained = f"the plan trains {method} in the {parts} (encoder mode {mode})"
    for option, owner in METHOD_OPTIONS.items():
        if overrides.get(option) is not None and method != owner:
            raise SamnetError(
                None,
                f"{_given(overrides, (option,))} configures {owner}, but {trained}",
                f"add --peft {owner} (with --peft-parts decoder to keep the encoder "
                f"cached), or drop --{_dashed(option)}",
            )
    adapts_encoder = method != "full" and parts == "encoder+decoder"
    if overrides.get("encoder_blocks") is not None and not adapts_encoder:
        raise SamnetError(
            None,
            f"{_given(overrides, ('encoder_blocks',))} picks the encoder blocks that "
            f"get LoRA or adapters, but {trained}",
            "use --peft lora or adapter with --peft-parts encoder+decoder, or drop "
            "--encoder-blocks",
        )
    # A cached encoder input must not change: the input adapter's channel mix stays at its
    # channel-mean start unless the encoder runs in every step.
    heads = NEW_HEADS if mode == "trained" else ("class_head",)
    if image_branch:
        heads = (*heads, IMAGE_BRANCH)
    config, because = _peft(method, PEFT_PARTS[parts], mode, spec, overrides, heads)
    given = [name for name in PEFT_OPTIONS if overrides.get(name) is not None]
    if given:
        because = f"set by the user ({_given(overrides, given)}): {because}"
    return config, because


def _peft(
    method: str,
    parts: tuple[str, ...],
    mode: str,
    spec: BackboneSpec,
    overrides: dict[str, Any],
    heads: tuple[str, ...],
) -> tuple[PeftConfig, str]:
    """The config of ``method`` in ``parts``, with ``heads`` trained beside it."""
    if method == "full":
        config = PeftConfig(method="full", parts=parts, trainable_extra=heads)
        if "encoder" in parts:
            return config, "every weight of the encoder and the decoder trains"
        return config, (
            "the encoder is frozen and cached: the whole mask decoder and the new class head train (Xie et al. 2024)"
        )
    if method == "lora":
        rank = overrides.get("lora_rank") or LORA_RANK
        options = {
            "lora_rank": rank,
            "lora_alpha": float(rank),
            "lora_targets": _lora_targets(parts, overrides),
        }
    else:
        options = {
            name: overrides[name]
            for name in ("adapter_ratio", "adapter_placement")
            if overrides.get(name) is not None
        }
    blocks, where = None, None
    if "encoder" in parts:
        blocks, where = _encoder_blocks(mode, spec, overrides.get("encoder_blocks"))
    config = PeftConfig(
        method=method,
        parts=parts,
        encoder_blocks=blocks,
        trainable_extra=heads,
        **options,
    )
    what = (
        f"LoRA (rank {config.lora_rank}, as SAMed; on {', '.join(config.lora_targets)})"
        if method == "lora"
        else f"adapters ({config.adapter_placement}, bottleneck "
        f"{config.adapter_ratio:g} of the block width)"
    )
    if where is None:
        return config, f"{what} in the decoder; the encoder is frozen and cached"
    return config, (
        f"Gu et al. 2024: PEFT in both encoder and decoder is the best strategy; {what} in {where} and the decoder"
    )


def _encoder_blocks(
    mode: str, spec: BackboneSpec, text: str | None
) -> tuple[tuple[int, ...] | None, str]:
    """The encoder blocks that get LoRA or adapters (``--encoder-blocks`` ``text`` or
    the mode's), and where that is, in words."""
    last_stage = tuple(range(-spec.last_stage_blocks, 0))
    if text is None:
        if mode == "prefix_cached":
            return last_stage, "the last encoder stage"
        return None, "every encoder block"
    blocks = _parsed(parse_encoder_blocks, text, "encoder_blocks")
    # The backbone's blocks, counted on a weightless copy: a block that does not exist
    # is reported now, with the error training would give, not when training starts.
    with torch.device("meta"):
        encoder = spec.build().image_encoder
    count = len(selected_encoder_blocks(encoder, None))
    selected_encoder_blocks(encoder, blocks)
    first = 0 if blocks is None else min(index % count for index in blocks)
    if mode == "prefix_cached" and first < count - len(last_stage):
        raise SamnetError(
            None,
            f"--encoder-blocks {text} reaches before the last {len(last_stage)} of "
            f"{spec.name}'s {count} encoder blocks, which encoder mode prefix_cached "
            "adapts (its cache holds the output of the blocks before them)",
            f"add --encoder-mode trained, or use --encoder-blocks last{len(last_stage)} "
            "or fewer",
        )
    return blocks, f"encoder blocks {text}"


def _lora_targets(parts: tuple[str, ...], overrides: dict[str, Any]) -> tuple[str, ...]:
    """The user's ``--lora-targets``, which must lie in ``parts``, or the default ones
    that do (a target's part is its first word)."""
    text = overrides.get("lora_targets")
    if text is None:
        return tuple(t for t in PeftConfig().lora_targets if t.split("_")[0] in parts)
    targets = _parsed(parse_lora_targets, text, "lora_targets")
    outside = [t for t in targets if t.split("_")[0] not in parts]
    if outside:
        raise SamnetError(
            None,
            f"--lora-targets {','.join(outside)} lie outside the parts that train "
            f"({'+'.join(parts)}): that part is frozen",
            "use --peft-parts encoder+decoder, or drop those targets",
        )
    return targets


def _parsed(parse: Callable[[str], Any], text: str, option: str) -> Any:
    """``parse(text)``, a ``SamnetError`` naming ``--option`` when it fails."""
    try:
        return parse(text)
    except ValueError as error:
        raise SamnetError(None, f"--{_dashed(option)} {error}", "see --help") from None


def _given(overrides: dict[str, Any], names: tuple[str, ...] | list[str]) -> str:
    """The options among ``names`` the user gave, as typed, e.g. ``--peft lora``."""
    return " ".join(
        f"--{_dashed(name)} {overrides[name]}"
        for name in names
        if overrides.get(name) is not None
    )


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def learning_rate_rule(peft: PeftConfig) -> tuple[float, str]:
    """MedSAM's rate when the encoder is fine-tuned fully, a larger one otherwise."""
    if "encoder" in peft.fully_trained_parts:
        return 1e-4, "MedSAM's rate for full fine-tuning of a pre-trained encoder"
    return (
        5e-4,
        "only PEFT weights, the decoder and new heads train: they start from zero or small weights and need a larger step than full fine-tuning (1e-4)",
    )
