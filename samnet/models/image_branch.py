"""A full-resolution image branch for the prompt-free head: fine detail SAM's decoder lacks."""

from __future__ import annotations

import torch
from torch import nn

# Channels of the branch's hidden convolutions: a few edge and intensity detectors.
WIDTH = 16


class ImageBranch(nn.Module):
    """A small CNN on the network's input whose features join SAM's upscaled mask features.

    SAM's decoder predicts masks from features at 4x its embedding grid
    (``B x D/8 x 4h x 4w``, then bilinear upsampling). With SAM's ViTs (16 px patches)
    that is a quarter of the encoder's input size: at 1024 px, 256 x 256. LiteMedSAM's
    TinyViT has a 4 px stride, so its mask features are at the encoder's input size
    (256 px: a 64 x 64 grid, 256 x 256 features); but that input is the patch resized
    to the backbone's size and its channels mixed into SAM's 3, and the decoder sees
    only what the encoder kept of it. SAM-HQ (Ke et al. 2023) and H-SAM add early,
    high-resolution features to the mask features; this is the cheapest such addition
    that still trains on a cached encoder: two 3 x 3 convolutions (one group norm) on the
    image, then a 1 x 1 convolution to the mask features' D/8 channels. The head resizes
    its upscaled features to the image's H x W and adds these before the class weights
    are applied (``samnet.models.class_head.mask_logits``), so the logits are at the
    input's resolution.

    Its input is the network's own input (``B x C x H x W``, nnU-Net-normalised, every
    channel, the patch's own pixels), not the encoder's resized 3-channel view: it sees
    what the encoder's resize and channel mix lose, and an embedding cache stores it as
    the predictor gives it (``samnet.preprocessing.cache``), so cached training and
    prediction run it on the same values. The group norm scales each image's features
    alike whatever its intensity range (nnU-Net leaves some channels unnormalised).

    The 1 x 1 convolution starts at zero: a network with a fresh branch computes what one
    without computes (bilinear resizing is linear, so resize-then-dot equals
    dot-then-resize), as samnet's LoRA and adapters start as the identity.

    Arguments:
      in_channels: C, the network's input channels.
      out_channels: the mask decoder's upscaled feature width,
        ``decoder.transformer_dim // 8``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, WIDTH, kernel_size=3, padding=1),
            nn.GroupNorm(1, WIDTH),
            nn.GELU(),
            nn.Conv2d(WIDTH, WIDTH, kernel_size=3, padding=1),
            nn.GELU(),
        )
        self.out = nn.Conv2d(WIDTH, out_channels, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``B x C x H x W`` -> features ``B x D/8 x H x W``."""
        return self.out(self.features(images))
