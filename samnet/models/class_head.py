"""Prompt-free multi-class output of SAM's mask decoder: K learned class tokens instead of prompts."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder
from torch import nn


class ClassHead(nn.Module):
    """K class tokens and their hypernetwork MLPs, run through a pre-trained SAM mask decoder.

    SAM's decoder turns prompt tokens plus its mask tokens into masks. Here the only tokens
    are K learned class tokens (background included), so no prompt is needed, and each
    token's hypernetwork MLP turns it into the weights of that class's logit map. The
    decoder's two-way transformer and upscaling are borrowed, not copied, so PEFT applied
    to the decoder acts on the prompt-free path too. Tokens and MLPs start from the
    pre-trained first mask token and its MLP (plus a little noise to break symmetry).
    """

    def __init__(self, decoder: MaskDecoder, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        pretrained_token = decoder.mask_tokens.weight[:1].detach()
        noise = (
            0.02
            * pretrained_token.std()
            * torch.randn(num_classes, pretrained_token.shape[1])
        )
        self.class_tokens = nn.Parameter(
            pretrained_token.repeat(num_classes, 1) + noise
        )
        self.class_mlps = nn.ModuleList(
            copy.deepcopy(decoder.output_hypernetworks_mlps[0])
            for _ in range(num_classes)
        )

    def forward(
        self,
        decoder: MaskDecoder,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        dense_embedding: torch.Tensor,
        fine_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits at 4x the embedding resolution, or at the image's.

        Arguments:
          decoder: the SAM mask decoder whose transformer and upscaling are used.
          image_embeddings: ``B x D x h x w`` from the image encoder.
          image_pe: ``1 x D x h x w`` positional encoding of the embedding grid.
          dense_embedding: ``1 x D x 1 x 1`` SAM's "no mask" dense prompt embedding.
          fine_features: ``B x D/8 x H x W`` of an image branch (``ImageBranch``), added
            to the upscaled features (``mask_logits``); None: none.

        Returns:
          ``B x K x 4h x 4w`` logits; ``B x K x H x W`` with ``fine_features``.
        """
        tokens = self.class_tokens.unsqueeze(0).expand(len(image_embeddings), -1, -1)
        class_outputs, upscaled = run_mask_decoder(
            decoder, tokens, image_embeddings, image_pe, dense_embedding
        )
        weights = torch.stack(
            [mlp(class_outputs[:, k]) for k, mlp in enumerate(self.class_mlps)], dim=1
        )
        return mask_logits(weights, upscaled, fine_features)


def run_mask_decoder(
    decoder: MaskDecoder,
    tokens: torch.Tensor,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    dense_embedding: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's two-way transformer and upscaling on ``tokens`` instead of prompt + mask tokens.

    Arguments:
      decoder: the SAM mask decoder.
      tokens: ``B x T x D`` output tokens.
      image_embeddings: ``B x D x h x w``; ``image_pe``: ``1 x D x h x w``;
        ``dense_embedding``: ``1 x D x 1 x 1`` (see ``ClassHead.forward``).

    Returns:
      The tokens after the transformer, ``B x T x D``, and the upscaled image features
      ``B x D/8 x 4h x 4w``.
    """
    batch, channels, height, width = image_embeddings.shape
    source = image_embeddings + dense_embedding
    positional = image_pe.expand(batch, -1, -1, -1)
    token_outputs, source = decoder.transformer(source, positional, tokens)
    source = source.transpose(1, 2).reshape(batch, channels, height, width)
    return token_outputs, decoder.output_upscaling(source)


def mask_logits(
    weights: torch.Tensor,
    upscaled: torch.Tensor,
    fine_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token mask weights ``B x T x D/8`` dotted with features ``B x D/8 x H x W``
    -> logits ``B x T x H x W``.

    ``fine_features`` ``B x D/8 x H' x W'`` (an image branch's, at the input's
    resolution): the features are resized bilinearly to H' x W' and these added, so the
    logits are ``B x T x H' x W'``. Resizing is linear, so zero ``fine_features`` give
    the resized logits of the features alone.
    """
    if fine_features is not None:
        resized = F.interpolate(
            upscaled,
            size=fine_features.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        upscaled = resized + fine_features
    batch, _, height, width = upscaled.shape
    logits = weights @ upscaled.flatten(2)
    return logits.view(batch, weights.shape[1], height, width)
