"""The names the PEFT options and a plan's ``sam.peft`` block use, and how the command
line's PEFT lists are read. No torch: ``--help`` and option checks stay fast.

``samnet.models.peft.PeftConfig`` is what these names configure; ``samnet.planners.modes``
turns the options into one.
"""

from __future__ import annotations

# --peft: how the --peft-parts train, LoRA, adapters or every weight; "decoder" is the
# older name of --peft full --peft-parts decoder (samnet.planners.modes.requested_peft).
PEFT_CHOICES = ("lora", "adapter", "full", "decoder")
# --peft-parts: where --peft's method goes, as PeftConfig parts. Gu et al. 2024 compare
# exactly these two: the decoder alone (the encoder frozen, so it can be cached) or the
# encoder and the decoder.
PEFT_PARTS = {"decoder": ("decoder",), "encoder+decoder": ("encoder", "decoder")}
# Where LoRA can go (PeftConfig.lora_targets).
LORA_TARGETS = ("encoder_attention", "encoder_mlp", "decoder_attention")
# Where adapters go in a transformer block (samnet.models.adapter explains both).
# attention_and_parallel_mlp: after attention and beside the MLP, as Medical SAM Adapter
#   (Wu et al. 2023) and Gu et al. 2024; sequential_mlp: one after the MLP (Houlsby).
ADAPTER_PLACEMENTS = ("attention_and_parallel_mlp", "sequential_mlp")
# The default is the placement of the study samnet's PEFT rule rests on: Gu et al. found
# PEFT in encoder and decoder best with it (reasons in samnet.models.adapter).
DEFAULT_ADAPTER_PLACEMENT = "attention_and_parallel_mlp"
# What plans and trained checkpoints written before the placement could be chosen used:
# one without the field is read with it, so it rebuilds the network it trained.
LEGACY_ADAPTER_PLACEMENT = "sequential_mlp"
ALL_BLOCKS = "all"
LAST_BLOCKS = "last"


def parse_lora_targets(text: str) -> tuple[str, ...]:
    """``"encoder_attention,encoder_mlp"`` -> the targets; ValueError names a bad one."""
    targets = tuple(target.strip() for target in text.split(","))
    unknown = [target for target in targets if target not in LORA_TARGETS]
    if unknown or len(set(targets)) != len(targets):
        raise ValueError(
            f"{text!r}: give distinct targets among {', '.join(LORA_TARGETS)}, "
            "separated by commas"
        )
    return targets


def parse_encoder_blocks(text: str) -> tuple[int, ...] | None:
    """Encoder block indices (``PeftConfig.encoder_blocks``) from ``all`` (None),
    ``lastN`` (the last N: ``-N..-1``) or a list such as ``0,1,10,11`` or ``-2,-1``;
    ValueError says what is wrong. Whether the blocks exist depends on the backbone
    (checked when the plan is made)."""
    text = text.strip()
    if text == ALL_BLOCKS:
        return None
    fix = (
        f"{text!r}: give {ALL_BLOCKS}, {LAST_BLOCKS}N (e.g. {LAST_BLOCKS}2) or block "
        "indices such as 0,1,10,11"
    )
    try:
        if text.startswith(LAST_BLOCKS):
            count = int(text.removeprefix(LAST_BLOCKS))
            if count < 1:
                raise ValueError(fix)
            return tuple(range(-count, 0))
        blocks = tuple(int(index) for index in text.split(","))
    except ValueError:
        raise ValueError(fix) from None
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"{text!r} repeats a block")
    return blocks
