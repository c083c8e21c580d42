"""A SAM plan as a short readable table: what was decided, to what, and why."""

from __future__ import annotations

import textwrap
from typing import Any

from samnet.core.peft_choices import LEGACY_ADAPTER_PLACEMENT
from samnet.planners.fingerprint import SamFingerprint
from samnet.planners.hardware import Hardware

WHAT_WIDTH, VALUE_WIDTH, BECAUSE_WIDTH = 20, 22, 78


def explain(plans: dict, configuration: str) -> str:
    """The fingerprint, the machine and every decision of ``configuration`` in ``plans``."""
    samnet = plans["samnet"]
    fingerprint = SamFingerprint.from_dict(samnet["fingerprint"])
    hardware = Hardware(**samnet["hardware"])
    lines = [
        f"samnet plan {plans['plans_name']} / {configuration} for {plans['dataset_name']}",
        f"  machine:  {hardware.describe()}",
        f"  dataset:  {describe_fingerprint(fingerprint)}",
        "",
        f"  {'what':<{WHAT_WIDTH}} {'value':<{VALUE_WIDTH}} because",
        f"  {'-' * WHAT_WIDTH} {'-' * VALUE_WIDTH} {'-' * BECAUSE_WIDTH}",
    ]
    for decision in plans["configurations"][configuration]["sam"]["decisions"]:
        lines += decision_rows(decision)
    return "\n".join(lines)


def describe_fingerprint(fp: SamFingerprint) -> str:
    # nnU-Net gives 2D images a dummy first axis (spacing 999, size 1): show the image's.
    first = 1 if fp.dimensions == 2 else 0
    spacing = " x ".join(f"{s:g}" for s in fp.median_spacing[first:])
    shape = " x ".join(str(s) for s in fp.median_shape[first:])
    classes = ", ".join(
        f"{c.name} ({c.voxel_fraction:.2%}, {c.in_plane_extent_mm:.0f} mm)"
        for c in fp.classes
    )
    return (
        f"{fp.modality} ({fp.modality_evidence}); {fp.dimensions}D, {fp.channels} channel(s), "
        f"spacing {spacing} mm, median shape {shape}; {fp.labelled_cases} labelled, "
        f"{fp.unlabelled_cases} unlabelled cases; classes: {classes}"
    )


def decision_rows(decision: dict[str, Any]) -> list[str]:
    """One decision over as many lines as its value and reason need."""
    value = format_value(decision["value"])
    values = textwrap.wrap(value, VALUE_WIDTH) or [""]
    reasons = textwrap.wrap(decision["because"], BECAUSE_WIDTH) or [""]
    rows = []
    for index in range(max(len(values), len(reasons))):
        what = decision["what"] if index == 0 else ""
        value_part = values[index] if index < len(values) else ""
        reason_part = reasons[index] if index < len(reasons) else ""
        rows.append(
            f"  {what:<{WHAT_WIDTH}} {value_part:<{VALUE_WIDTH}} {reason_part}".rstrip()
        )
    return rows


def format_value(value: Any) -> str:
    """Short text for a decision's value."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return describe_peft(value)
    if isinstance(value, list | tuple):
        return " x ".join(str(v) for v in value)
    return str(value)


def describe_peft(peft: dict[str, Any]) -> str:
    """E.g. ``LoRA r4 encoder+decoder, blocks -2,-1`` for a ``PeftConfig.to_dict()``
    (a dict without ``adapter_placement`` is a plan's from before it could be chosen)."""
    parts = "+".join(peft["parts"])
    placement = peft.get("adapter_placement", LEGACY_ADAPTER_PLACEMENT)
    method = {
        "full": "full",
        "lora": f"LoRA r{peft['lora_rank']}",
        "adapter": f"adapter {peft['adapter_ratio']:g} {placement}",
        "frozen": "frozen",
    }[peft["method"]]
    text = f"{method} {parts}"
    if peft.get("encoder_blocks"):
        text += ", blocks " + ",".join(str(b) for b in peft["encoder_blocks"])
    if peft.get("full_parts"):
        text += ", full " + "+".join(peft["full_parts"])
    return text
