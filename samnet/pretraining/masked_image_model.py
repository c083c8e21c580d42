"""SimMIM-style masked image modelling for any SAM image encoder (Xie et al., CVPR 2022).

Square patches of the backbone input are replaced by a learned fill value; the encoder embeds the whole image, a 1x1 convolution and a pixel shuffle predict
every input pixel from the embeddings, and the loss is the L1 error on the hidden pixels.

MAE drops the hidden patches from the encoder instead, which saves compute but needs an
encoder that can run on any subset of patches. SAM's ViT attends within windows of the
full patch grid and TinyViT (LiteMedSAM, MobileSAM) convolves over it, so both need every
patch present: filling the hidden ones works for all backbones here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from samnet.pretraining.masking import pixel_mask, random_patch_mask

# SimMIM's ratio and patch side: hidden regions too large to fill in from neighbouring pixels.
DEFAULT_MASK_RATIO = 0.6
DEFAULT_MASK_PATCH = 32


@dataclass
class Reconstruction:
    """One masked-image-modelling pass.

    Attributes:
      loss: mean L1 error over the hidden pixels (scalar).
      prediction: ``B x 3 x S x S`` predicted backbone input.
      target: ``B x 3 x S x S`` the backbone input (what the input adapter made).
      mask: ``B x 1 x S x S``, 1 on hidden pixels.
    """

    loss: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor


class MaskedImageModel(nn.Module):
    """A SAM image encoder trained to fill in hidden patches of its own input.

    Arguments:
      input_adapter: nnU-Net-normalised ``B x C x H x W`` -> backbone input
        ``B x 3 x S x S`` (``samnet.models.input_adapter.InputAdapter``); not trained.
      image_encoder: ``B x 3 x S x S`` -> ``B x D x S/e x S/e``; trained.
      embedding_stride: e, input pixels per embedding cell.
      embedding_dim: D.
      mask_ratio: fraction of patches hidden in each image.
      mask_patch: side of a hidden patch (px); divides S.
    """

    def __init__(
        self,
        input_adapter: nn.Module,
        image_encoder: nn.Module,
        embedding_stride: int,
        embedding_dim: int = 256,
        mask_ratio: float = DEFAULT_MASK_RATIO,
        mask_patch: int = DEFAULT_MASK_PATCH,
    ) -> None:
        super().__init__()
        self.input_adapter = input_adapter.requires_grad_(False)
        self.image_encoder = image_encoder
        self.embedding_stride = embedding_stride
        self.mask_ratio = mask_ratio
        self.mask_patch = mask_patch
        self.fill = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(embedding_dim, embedding_stride**2 * 3, kernel_size=1),
            nn.PixelShuffle(embedding_stride),
        )

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> Reconstruction:
        """Images ``B x C x H x W`` -> the reconstruction of a random masking of them."""
        # The target and the loss stay float32 under autocast: only the encoder and the
        # reconstruction head compute in float16.
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            target = self.input_adapter(x.float())
        side = target.shape[-1]
        if side % self.mask_patch:
            raise ValueError(
                f"mask patches of {self.mask_patch} px do not tile {side} px"
            )
        patches = random_patch_mask(
            len(x), side // self.mask_patch, self.mask_ratio, generator
        )
        mask = pixel_mask(patches, self.mask_patch).to(target)
        masked = target * (1 - mask) + self.fill * mask
        prediction = self.decoder(self.image_encoder(masked)).float()
        hidden = mask.sum() * target.shape[1]
        loss = ((prediction - target).abs() * mask).sum() / hidden.clamp_min(1)
        return Reconstruction(loss, prediction, target, mask)
