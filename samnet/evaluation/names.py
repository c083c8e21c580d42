"""A method's title: what it is, from its trainer, plans, configuration and the plan's ``sam`` block.

nnU-Net's identifier ``TRAINER__PLANS__CONFIGURATION`` says how to reproduce a method; its
title says what it is, e.g. "SAM (LiteMedSAM, frozen encoder, decoder trained)",
"nnU-Net 2d", "nnU-Net 2d at SAM's spacing", "nnU-Net ResEnc M 2d",
"nnU-Net 2d on 5 support slices". The report shows both.
"""

from __future__ import annotations

import json
from pathlib import Path

from samnet.core.layout import (
    BASELINE_PLANS,
    LOWRES_2D_CONFIGURATION,
    SAM_CONFIGURATION,
    SAM_PLANS,
)
from samnet.core.methods import (
    BASELINE_TRAINER,
    FEW_SHOT_TRAINER,
    PROMPTED_TRAINER,
    SAM_TRAINERS,
    SUPPORT_SHOTS_FACTORS,
    SUPPORT_TRAINERS,
    Method,
)

SAM_TRAINER_PREFIX = "nnUNetTrainerSAM"
# nnU-Net's residual-encoder presets (nnUNetPlannerResEnc{M,L,XL}) by plans identifier.
RESENC_TITLES = {
    "nnUNetResEncUNetMPlans": "ResEnc M",
    "nnUNetResEncUNetLPlans": "ResEnc L",
    "nnUNetResEncUNetXLPlans": "ResEnc XL",
}
PART_TITLES = {
    "encoder": "encoder",
    "decoder": "decoder",
    "prompt_encoder": "prompt encoder",
}
# What a SAM trainer says without its plan (a report made before titles were stored).
PLANLESS_SAM_TITLES = {
    SAM_TRAINERS["trained"]: "SAM",
    SAM_TRAINERS["cached"]: "SAM (cached encoder)",
    FEW_SHOT_TRAINER: "SAM few-shot",
    PROMPTED_TRAINER: "SAM prompted",
}


def read_sam_block(method_folder: Path, method: Method) -> dict | None:
    """The ``sam`` block that describes ``method``, from the plans nnU-Net copied into its folder.

    Its configuration's; for nnU-Net on support slices, the few-shot ``sam_2d``'s, whose K it
    trains on. None without plans or block. SAMPlanner writes the block into the
    configuration itself, never through ``inherits_from``.
    """
    plans_file = method_folder / "plans.json"
    if not plans_file.is_file():
        return None
    configurations = json.loads(plans_file.read_text())["configurations"]
    configuration = (
        SAM_CONFIGURATION
        if method.trainer in SUPPORT_TRAINERS
        else method.configuration
    )
    return configurations.get(configuration, {}).get("sam")


def parts_title(parts: list[str]) -> str:
    return " and ".join(PART_TITLES.get(part, part) for part in parts)


def training_phrases(sam: dict) -> list[str]:
    """What trains, from the plan's PEFT and encoder mode, e.g. ["frozen encoder", "decoder trained"]."""
    peft = sam["peft"]
    method, parts = peft["method"], list(peft["parts"])
    full_parts = list(peft.get("full_parts", []))
    tuned = parts if method != "frozen" else []
    phrases = []
    if sam.get("pretrain"):
        phrases.append("encoder pre-trained on the dataset")
    if "encoder" not in tuned + full_parts:
        phrases.append("frozen encoder")
    elif sam["encoder_mode"] == "prefix_cached":
        phrases.append("leading encoder stages frozen and cached")
    if tuned:
        phrases.append(
            {"lora": "LoRA in {}", "adapter": "adapters in {}"}.get(
                method, "{} trained"
            ).format(parts_title(tuned))
        )
    if full_parts:
        phrases.append(f"{parts_title(full_parts)} trained")
    if not tuned and not full_parts:
        phrases.append("heads trained")
    if sam.get("image_branch"):
        phrases.append("full-resolution image branch")
    return phrases


def sam_title(method: Method, sam: dict | None) -> str:
    """A SAM method's title: backbone and what trains, or its mode (few-shot, prompted)."""
    if sam is None:
        return PLANLESS_SAM_TITLES.get(method.trainer, f"SAM ({method.trainer})")
    # torch and segment-anything come with the registry: kept off samnet_compare --help
    from samnet.models.backbones import BACKBONES

    spec = BACKBONES.get(sam["backbone"])
    backbone = spec.title if spec else sam["backbone"]
    if method.trainer == FEW_SHOT_TRAINER:
        return f"SAM few-shot ({backbone}, {sam['few_shot']['shots']} support slices)"
    details = ", ".join([backbone, *training_phrases(sam)])
    if method.trainer == PROMPTED_TRAINER:
        prompts = " and ".join(sam["prompts"])
        return f"SAM prompted ({details}; {prompts} prompts)"
    return f"SAM ({details})"


def nnunet_title(method: Method, sam: dict | None) -> str:
    """An nnU-Net method's title: preset, configuration, and what it trains on if not all."""
    configuration = (
        "2d at SAM's spacing"
        if method.configuration == LOWRES_2D_CONFIGURATION
        else method.configuration
    )
    preset = RESENC_TITLES.get(method.plans)
    title = (
        f"nnU-Net {preset} {configuration}" if preset else f"nnU-Net {configuration}"
    )
    if method.trainer in SUPPORT_SHOTS_FACTORS:
        factor = SUPPORT_SHOTS_FACTORS[method.trainer]
        if sam is not None and sam.get("few_shot"):
            return f"{title} on {factor * sam['few_shot']['shots']} support slices"
        slices = "the" if factor == 1 else f"{factor}x the"
        return f"{title} on {slices} few-shot support slices"
    if method.trainer != BASELINE_TRAINER:
        return f"{title} ({method.trainer})"
    if preset is None and method.plans not in (BASELINE_PLANS, SAM_PLANS):
        return f"{title} (plans {method.plans})"
    return title


def is_sam_trainer(trainer: str) -> bool:
    """Whether ``trainer`` is one of samnet's SAM trainers (they share a prefix)."""
    return trainer.startswith(SAM_TRAINER_PREFIX)


def method_title(method: Method, sam: dict | None) -> str:
    """What ``method`` is, in words; ``sam`` is the block ``read_sam_block`` gives (or None)."""
    if is_sam_trainer(method.trainer):
        return sam_title(method, sam)
    return nnunet_title(method, sam)


def result_titles(
    methods: dict[str, dict], ensembles: dict[str, dict]
) -> dict[str, str]:
    """The title of every method and ensemble of a report, by identifier.

    A method's stored title; a method of a report made before titles were stored is named
    from its identifier alone. An ensemble joins its members' titles with " + ".
    """
    titles = {
        name: method.get("title") or method_title(Method.from_folder_name(name), None)
        for name, method in methods.items()
    }
    return titles | {
        name: " + ".join(titles[member] for member in ensemble["members"])
        for name, ensemble in ensembles.items()
    }
