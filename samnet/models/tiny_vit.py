"""TinyViT image encoder with MobileSAM's parameter names (MobileSAM and LiteMedSAM weights).

The feature-map size is read from the input at every step, so any input size divisible by
the encoder's stride works: LiteMedSAM at 128 px gives a 32 x 32 embedding. Attention runs
in fixed-size windows (zero-padded at the border), so its biases never need resizing.
Stochastic depth and dropout are left out: both backbones use rate 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import window_partition, window_unpartition
from torch import nn


class Conv2dBN(nn.Sequential):
    """Convolution without bias followed by batch norm (children ``c`` and ``bn``)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans,
            out_chans,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One convolution equal to this module in eval mode (batch norm folded in)."""
        conv, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=True,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class PatchEmbed(nn.Module):
    """Two ``Conv2dBN`` with GELU between: ``B x in_chans x H x W`` -> ``B x dim x h x w``.

    ``h = H / stride²``: each convolution applies ``stride``. MobileSAM uses 3 x 3
    convolutions with stride 2 (1024 px -> 256), LiteMedSAM 1 x 1 ones with stride 1.
    """

    def __init__(self, in_chans: int, dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, dim // 2, kernel_size, stride),
            nn.GELU(),
            Conv2dBN(dim // 2, dim, kernel_size, stride),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block on ``B x C x H x W``: expand, depthwise 3 x 3, project."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, kernel_size=3, groups=hidden)
        # Zero-initialised last batch norm: a fresh block starts as the identity.
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return F.gelu(x + residual)


class PatchMerging(nn.Module):
    """``B x dim x H x W`` -> ``B x out_dim x ceil(H/stride) x ceil(W/stride)``.

    1 x 1 projection, strided depthwise 3 x 3, 1 x 1; stride 1 changes only the width.
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(
            out_dim, out_dim, kernel_size=3, stride=stride, groups=out_dim
        )
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one square window, with a learned bias per head
    for each (|dy|, |dx|) offset between two positions.

    ``B x N x dim`` -> ``B x N x dim`` with ``N = window_size²``, positions row-major.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        # Per head: query, key and value side by side (TinyViT's layout).
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(
            torch.zeros(num_heads, window_size * window_size)
        )
        positions = torch.arange(window_size * window_size)
        rows, cols = positions // window_size, positions % window_size
        dy = (rows[:, None] - rows[None, :]).abs()
        dx = (cols[:, None] - cols[None, :]).abs()
        # (|dy|, |dx|) numbered row-major: the order in which TinyViT first meets them,
        # which its weights follow. Derived, so not saved (as in TinyViT).
        self.register_buffer(
            "attention_bias_idxs", dy * window_size + dx, persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(
            batch, tokens, self.num_heads, 3 * self.head_dim
        )
        query, key, value = (
            part.reshape(-1, tokens, self.head_dim)
            for part in qkv.transpose(1, 2).split(self.head_dim, dim=-1)
        )
        bias = self.attention_biases[:, self.attention_bias_idxs]
        # Written out rather than F.scaled_dot_product_attention: windows hold at most
        # 196 tokens, and on CPU SDPA's float-mask path spent longer validating the mask
        # than attending (measured in training: 6% of LiteMedSAM's encoder time). The
        # inference-only FastEncoder gathers the bias once and uses it (fused_attention).
        scores = torch.baddbmm(
            bias.expand(batch, -1, -1, -1).reshape(-1, tokens, tokens),
            query * self.head_dim**-0.5,
            key.transpose(1, 2),
        )
        out = torch.bmm(scores.softmax(dim=-1), value).view(
            batch, self.num_heads, tokens, -1
        )
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class Mlp(nn.Module):
    """Pre-norm two-layer perceptron with GELU on ``... x dim``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention, depthwise 3 x 3 convolution, MLP on ``B x dim x H x W``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = Conv2dBN(dim, dim, kernel_size=local_conv_size, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.permute(0, 2, 3, 1)
        height, width = tokens.shape[1:3]
        windows, padded_size = window_partition(tokens, self.window_size)
        attended = self.attn(windows.flatten(1, 2)).view_as(windows)
        tokens = tokens + window_unpartition(
            attended, self.window_size, padded_size, (height, width)
        )
        tokens = self.local_conv(tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        tokens = tokens + self.mlp(tokens)
        return tokens.permute(0, 3, 1, 2)


class TinyViTStage(nn.Module):
    """Blocks at one resolution, then an optional ``PatchMerging``; ``B x C x H x W``."""

    def __init__(
        self, blocks: Sequence[nn.Module], downsample: PatchMerging | None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT-5M, SAM's image encoder: ``B x in_chans x H x W`` -> ``B x out_chans x h x w``.

    ``h = H / s`` with ``s = patch_stride² x prod(merge_strides)`` (``embedding_stride``):
    16 for MobileSAM, 4 for LiteMedSAM, so both give a 64 x 64 embedding at their native
    size (1024 and 256 px). Stage 0 is convolutional (``MBConv``), the later stages use
    window attention; a ``PatchMerging`` between consecutive stages changes the width and
    applies ``merge_strides``.

    Arguments:
      img_size: the square input size this encoder is used at (SAM's pre- and
        post-processing read it; the forward pass follows the actual input).
      in_chans: input channels.
      embed_dims, depths: channels and number of blocks of each stage.
      num_heads, window_sizes: of each attention stage (stages 1, 2, ...).
      merge_strides: stride of the ``PatchMerging`` after each stage but the last.
      patch_kernel_size, patch_stride: of each of the two patch-embedding convolutions.
      mlp_ratio: MLP width over block width in attention stages.
      mbconv_expand_ratio: hidden width over block width in ``MBConv``.
      local_conv_size: kernel of the depthwise convolution in attention blocks.
      out_chans: channels of the embedding (SAM's prompt dimension).
    """

    def __init__(
        self,
        img_size: int,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (4, 5, 10),
        window_sizes: Sequence[int] = (7, 14, 7),
        merge_strides: Sequence[int] = (2, 2, 1),
        patch_kernel_size: int = 3,
        patch_stride: int = 2,
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        stages = len(depths)
        later_stages = (num_heads, window_sizes, merge_strides)
        if len(embed_dims) != stages or any(len(v) != stages - 1 for v in later_stages):
            raise ValueError(
                "TinyViT takes embed_dims and depths for every stage, and num_heads, "
                "window_sizes and merge_strides for every stage after the first"
            )
        self.img_size = img_size
        self.embedding_stride = patch_stride**2 * math.prod(merge_strides)
        self.patch_embed = PatchEmbed(
            in_chans, embed_dims[0], patch_kernel_size, patch_stride
        )
        self.layers = nn.ModuleList()
        for stage, (dim, depth) in enumerate(zip(embed_dims, depths)):
            if stage == 0:
                blocks = [MBConv(dim, mbconv_expand_ratio) for _ in range(depth)]
            else:
                blocks = [
                    TinyViTBlock(
                        dim,
                        num_heads[stage - 1],
                        window_sizes[stage - 1],
                        mlp_ratio,
                        local_conv_size,
                    )
                    for _ in range(depth)
                ]
            downsample = None
            if stage < stages - 1:
                downsample = PatchMerging(
                    dim, embed_dims[stage + 1], merge_strides[stage]
                )
            self.layers.append(TinyViTStage(blocks, downsample))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.neck(x)


def _init_linear(module: nn.Module) -> None:
    """TinyViT's initialisation of linear layers: normal (std 0.02), zero bias.

    TinyViT truncates this normal at +-2, a hundred standard deviations out: a plain normal
    is the same distribution, and much faster to draw.
    """
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
