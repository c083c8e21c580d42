"""Split a SAM image encoder at a stage boundary into a frozen prefix and a trainable rest.

With ``encoder_mode`` "prefix_cached" the prefix's output is computed once per window and
cached; LoRA or adapters in the later stages and the decoder train from the cache.
Both parts share the encoder's own submodules (nothing is copied), so PEFT applied to
the encoder, before or after splitting, is seen by the rest; ``rest(prefix(x))`` runs
exactly the operations of ``encoder(x)``, in the same order.

Stages: TinyViT's ``layers`` (LiteMedSAM, MobileSAM: 4, the first convolutional), SAM
ViT's ``blocks`` (12 to 32). The prefix always holds the patch embedding (and the ViT's
absolute position embedding) in front of its first ``stages`` stages.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from samnet.core.errors import SamnetError
from samnet.models.tiny_vit import TinyViT

SPLIT_FIX = "use encoder_mode 'cached' or 'trained' for this backbone"


class VitPrefix(nn.Module):
    """Patch embedding, position embedding and the first blocks of a SAM ViT.

    ``B x 3 x S x S`` -> ``B x h x w x C`` (channels last, as ViT blocks take it).
    """

    def __init__(self, encoder: ImageEncoderViT, stages: int) -> None:
        super().__init__()
        self.patch_embed = encoder.patch_embed
        self.pos_embed = encoder.pos_embed
        self.blocks = nn.ModuleList(encoder.blocks[:stages])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x


class VitRest(nn.Module):
    """The remaining blocks and the neck of a SAM ViT: ``B x h x w x C`` -> ``B x D x h x w``."""

    def __init__(self, encoder: ImageEncoderViT, stages: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(encoder.blocks[stages:])
        self.neck = encoder.neck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


def encoder_stages(encoder: nn.Module) -> nn.ModuleList:
    """The stages a prefix can end between: TinyViT ``layers`` or SAM ViT ``blocks``."""
    if isinstance(encoder, TinyViT):
        return encoder.layers
    if isinstance(encoder, ImageEncoderViT):
        return encoder.blocks
    raise SamnetError(
        None,
        f"cannot split a {type(encoder).__name__} image encoder into a cached prefix",
        SPLIT_FIX,
    )


def split_image_encoder(encoder: nn.Module, stages: int) -> tuple[nn.Module, nn.Module]:
    """``(prefix, rest)`` of ``encoder`` after its first ``stages`` stages.

    TinyViT: prefix = ``patch_embed`` + ``layers[:stages]`` (``B x 3 x S x S`` ->
    ``B x C x h' x w'``), rest = ``layers[stages:]`` + ``neck``. SAM ViT: see
    ``VitPrefix`` and ``VitRest``. ``rest(prefix(x))`` equals ``encoder(x)`` exactly.
    """
    all_stages = encoder_stages(encoder)
    if not 0 <= stages <= len(all_stages):
        raise SamnetError(
            None,
            f"cannot cache {stages} encoder stages: the encoder has {len(all_stages)}",
            f"choose 0..{len(all_stages)}",
        )
    if isinstance(encoder, TinyViT):
        prefix = nn.Sequential(encoder.patch_embed, *encoder.layers[:stages])
        return prefix, nn.Sequential(*encoder.layers[stages:], encoder.neck)
    return VitPrefix(encoder, stages), VitRest(encoder, stages)


def frozen_prefix_stages(encoder: nn.Module) -> int:
    """How many leading stages of ``encoder`` have no trainable parameter.

    Call it after ``samnet.models.peft.apply_peft``: LoRA and adapter parameters train,
    so the first adapted stage ends the prefix that can be cached.

    Raises:
      SamnetError: the patch (or position) embedding trains, so nothing can be cached.
    """
    # The prefix of zero stages: the patch (and position) embedding every prefix holds.
    front, _ = split_image_encoder(encoder, 0)
    if any(p.requires_grad for p in front.parameters()):
        raise SamnetError(
            None,
            "the image encoder's patch embedding trains, so no prefix of it can be cached",
            SPLIT_FIX,
        )
    stages = encoder_stages(encoder)
    trained = [
        index
        for index, stage in enumerate(stages)
        if any(p.requires_grad for p in stage.parameters())
    ]
    return trained[0] if trained else len(stages)
