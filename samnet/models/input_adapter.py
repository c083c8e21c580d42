"""Map nnU-Net-normalised patches to the input a SAM backbone was pre-trained on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# SAM and MobileSAM were trained on 0..255 RGB standardised with these ImageNet statistics.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
NORMALIZATIONS = ("unit_range", "sam_rgb")
# Per-image percentiles for the min-max mapping: robust to the isolated outliers that
# z-scored MRI keeps (nnU-Net clips CT to the same percentiles of the foreground).
LOW_PERCENTILE, HIGH_PERCENTILE = 0.005, 0.995


class InputAdapter(nn.Module):
    """``B x C x H x W`` nnU-Net-normalised data -> ``B x 3 x S x S`` backbone input.

    Channels: 1 is repeated and 3 pass through unchanged (no parameters); any other count
    is mixed into 3 by a learned 1x1 convolution initialised to the channel mean.
    Size: resized (stretched) to the square backbone input ``S``, bilinear.
    Intensity: each image is clipped to its 0.5/99.5 percentiles and mapped to [0, 1]
    (``unit_range``: LiteMedSAM, MedSAM), or further to SAM's standardised 0..255 RGB
    (``sam_rgb``: SAM, MobileSAM).
    """

    def __init__(self, in_channels: int, image_size: int, normalization: str) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.normalization = normalization
        self.channel_mix = None
        if in_channels not in (1, 3):
            self.channel_mix = nn.Conv2d(in_channels, 3, kernel_size=1, bias=False)
            nn.init.constant_(self.channel_mix.weight, 1.0 / in_channels)
        self.register_buffer(
            "pixel_mean",
            torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "pixel_std", torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_mix is not None:
            x = self.channel_mix(x)
        elif self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(
            x,
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )
        flat = x.flatten(1).float()
        bounds = torch.quantile(
            flat,
            torch.tensor([LOW_PERCENTILE, HIGH_PERCENTILE], device=x.device),
            dim=1,
        )
        low, high = (b.view(-1, 1, 1, 1).to(x.dtype) for b in bounds)
        x = ((x - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)
        if self.normalization == "sam_rgb":
            x = (x * 255.0 - self.pixel_mean) / self.pixel_std
        return x
