"""SAM as an nnU-Net network: ``B x C x H x W`` in, ``B x K x H x W`` class logits out."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from samnet.models.backbones import BaseWeights, build_sam, get_backbone
from samnet.models.class_head import ClassHead
from samnet.models.input_adapter import InputAdapter


class SamSegmentationNetwork(nn.Module):
    """Prompt-free multi-class SAM, usable wherever nnU-Net expects a network.

    ``forward`` = ``decode(encode(x))``; the split lets a frozen encoder's output be cached.
    ``forward_prompted`` runs SAM's own prompted path (boxes and/or points) for zero-shot
    use and as a baseline.

    Arguments:
      sam: a SAM model (image encoder, prompt encoder, mask decoder), e.g. from
        ``samnet.models.backbones.build_sam``.
      in_channels: C, the channels nnU-Net gives (1, 3, 4 MRI sequences, ...).
      num_classes: K, background included.
      image_size: the square side the backbone sees.
      normalization: what the backbone was pre-trained on (see ``InputAdapter``).
    """

    def __init__(
        self,
        sam: Sam,
        in_channels: int,
        num_classes: int,
        image_size: int,
        normalization: str,
    ) -> None:
        super().__init__()
        self.input_adapter = InputAdapter(in_channels, image_size, normalization)
        self.sam = sam
        self.class_head = ClassHead(sam.mask_decoder, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> image embeddings ``B x D x h x w``."""
        return self.sam.image_encoder(self.input_adapter(x))

    def decode(
        self, image_embeddings: torch.Tensor, output_size: tuple[int, int]
    ) -> torch.Tensor:
        """Image embeddings ``B x D x h x w`` -> class logits ``B x K x H x W`` (``output_size``)."""
        logits = self.class_head(
            self.sam.mask_decoder,
            image_embeddings,
            self.embedding_positions(image_embeddings),
            self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1),
        )
        return F.interpolate(
            logits, size=output_size, mode="bilinear", align_corners=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), tuple(x.shape[-2:]))

    def embedding_positions(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """SAM's dense positional encoding ``1 x D x h x w`` for any embedding grid size."""
        return self.sam.prompt_encoder.pe_layer(
            tuple(image_embeddings.shape[-2:])
        ).unsqueeze(0)

    def forward_prompted(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SAM's prompted path on one image: one mask per object, logits ``N x 1 x H x W``.

        Arguments:
          image: ``1 x C x H x W``.
          boxes: ``N x 4`` (x0, y0, x1, y1) in pixels of ``image``.
          points: ``N x P x 2`` (x, y) in pixels of ``image``; ``point_labels`` ``N x P``:
            1 inside the object, 0 outside.
        """
        height, width = image.shape[-2:]
        size = self.input_adapter.image_size
        scale = torch.tensor([size / width, size / height], device=image.device)
        embeddings = self.encode(image)
        sparse, dense = self.sam.prompt_encoder(
            points=None if points is None else (points * scale, point_labels),
            boxes=None if boxes is None else boxes * scale.repeat(2),
            masks=None,
        )
        masks, _ = self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.embedding_positions(embeddings),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return F.interpolate(
            masks, size=(height, width), mode="bilinear", align_corners=False
        )


def build_network(
    backbone: str,
    in_channels: int,
    num_classes: int,
    image_size: int | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
) -> tuple[SamSegmentationNetwork, BaseWeights]:
    """A registered backbone as a prompt-free network, and the identity of its base weights.

    ``image_size`` defaults to the backbone's native input size.
    """
    spec = get_backbone(backbone)
    size = image_size or spec.native_size
    sam, base = build_sam(
        backbone, checkpoint=checkpoint, image_size=size, pretrained=pretrained
    )
    return SamSegmentationNetwork(
        sam, in_channels, num_classes, size, spec.normalization
    ), base
