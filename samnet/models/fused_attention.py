"""TinyViT's window attention as one fused attention call, for inference.

``WindowAttention`` writes attention out (scores, bias, softmax, product) so that training
keeps its plain autograd. For inference, ``F.scaled_dot_product_attention`` with the
relative-position bias as an additive mask does the same in one call that never stores
the scores, and the bias is gathered once instead of on every call. Measured on LiteMedSAM
(compiled FastEncoder, AMD EPYC, 2 threads, s/slice): 0.098 -> 0.089 at 128 px batch 1,
0.111 -> 0.104 batch 8, 0.361 -> 0.312 at 256 px batch 1, 0.369 -> 0.313 batch 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samnet.models.module_replacement import replace_modules
from samnet.models.tiny_vit import WindowAttention


class FusedWindowAttention(nn.Module):
    """``WindowAttention`` in one attention call: ``B x N x dim`` -> ``B x N x dim``."""

    def __init__(self, attention: WindowAttention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.head_dim = attention.head_dim
        self.norm = attention.norm
        self.qkv = attention.qkv
        self.proj = attention.proj
        bias = attention.attention_biases[:, attention.attention_bias_idxs]
        # 1 x heads x N x N, broadcast over the windows.
        self.register_buffer("bias", bias.detach()[None].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(
            batch, tokens, self.num_heads, 3 * self.head_dim
        )
        query, key, value = qkv.transpose(1, 2).split(self.head_dim, dim=-1)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=self.bias)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


def fuse_window_attention(module: nn.Module) -> nn.Module:
    """Replace, in place, every ``WindowAttention`` below ``module`` by
    ``FusedWindowAttention``; the same outputs up to float rounding."""
    return replace_modules(
        module,
        lambda child: (
            FusedWindowAttention(child) if isinstance(child, WindowAttention) else None
        ),
    )
