"""Run a SAM at an input size other than the one it was trained at.

What depends on the input size:
- the ViT's absolute position embedding, one vector per patch of the native grid:
  interpolated here (bicubic) to the new grid;
- the relative position tables of the ViT's global-attention blocks: segment_anything's
  ``get_rel_pos`` already resizes them to the actual grid at every forward, so they keep
  their native shape (and checkpoints keep loading);
- the prompt encoder's image and embedding geometry: set here.
Window attention (ViT blocks, TinyViT) pads to whole windows and needs nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, Sam
from torch import nn


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_size: int) -> torch.Tensor:
    """``1 x G x G x C`` position embedding -> ``1 x grid_size x grid_size x C``.

    Bicubic; antialiased, because a smaller grid samples the embedding coarser. The input
    itself is returned when the size already matches.
    """
    if pos_embed.shape[1:3] == (grid_size, grid_size):
        return pos_embed
    resized = F.interpolate(
        pos_embed.permute(0, 3, 1, 2),
        size=(grid_size, grid_size),
        mode="bicubic",
        align_corners=False,
        antialias=True,
    )
    return resized.permute(0, 2, 3, 1).contiguous()


def embedding_grid_size(image_size: int, embedding_stride: int) -> int:
    """Side of the image embedding for a square input; the input must divide evenly."""
    if image_size <= 0 or image_size % embedding_stride:
        raise ValueError(
            f"input size {image_size} is not a positive multiple of the encoder's "
            f"stride {embedding_stride} (input pixels per embedding pixel)"
        )
    return image_size // embedding_stride


def resize_sam(sam: Sam, image_size: int, embedding_stride: int) -> Sam:
    """Make ``sam`` take ``image_size`` x ``image_size`` input (in place; returned for chaining).

    Arguments:
      embedding_stride: input pixels per embedding pixel; ``image_size`` must be a multiple.
    """
    grid_size = embedding_grid_size(image_size, embedding_stride)
    encoder = sam.image_encoder
    encoder.img_size = image_size
    if isinstance(encoder, ImageEncoderViT) and encoder.pos_embed is not None:
        with torch.no_grad():
            resized = interpolate_pos_embed(encoder.pos_embed, grid_size)
        if resized is not encoder.pos_embed:
            encoder.pos_embed = nn.Parameter(
                resized, requires_grad=encoder.pos_embed.requires_grad
            )
    prompt_encoder = sam.prompt_encoder
    prompt_encoder.input_image_size = (image_size, image_size)
    prompt_encoder.image_embedding_size = (grid_size, grid_size)
    # The prompt encoder's mask input is 4x the embedding grid, as in SAM.
    prompt_encoder.mask_input_size = (4 * grid_size, 4 * grid_size)
    return sam
