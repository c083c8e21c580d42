"""A frozen image encoder made fast for CPU inference, with the same outputs.

What measurably helps on CPU (see ``benchmarks/encoder_speed.py``): folding BatchNorm
into the preceding convolutions, fusing each GELU into the convolution before it
(``fused_convolutions``) and running linear layers on oneDNN with the MLP's GELU fused
(``fused_linears``), window attention in one fused call (``fused_attention``),
channels-last memory layout, ``torch.inference_mode``, ``torch.compile`` with frozen
weights (fuses the elementwise work and pre-packs weights for oneDNN), and keeping freed
memory in the process instead of faulting it in again each call (``heap``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from samnet.models.fused_attention import fuse_window_attention
from samnet.models.fused_convolutions import can_fuse, fuse_convolution_activations
from samnet.models.fused_linears import fuse_linear_activations
from samnet.models.heap import keep_freed_memory
from samnet.models.module_replacement import replace_modules
from samnet.models.tiny_vit import Conv2dBN

# Slices per call of the encoder: with freed memory kept, 1, 2 and 4 are within 4% of each
# other (AMD EPYC, 2 threads, compiled, batch 8, s/slice: 0.085 / 0.082 / 0.081 at 128 px,
# 0.339 / 0.336 for 1 / 2 at 256 px).
DEFAULT_MICRO_BATCH = 2


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every ``Conv2dBN`` below ``module`` by its single BN-folded convolution, in place."""
    return replace_modules(
        module, lambda child: child.fuse() if isinstance(child, Conv2dBN) else None
    )


class FastEncoder(nn.Module):
    """Inference-only copy of an image encoder: ``B x 3 x S x S`` -> ``B x D x h x w``.

    The wrapped encoder is copied, so the original (and any training of it) is untouched.

    Arguments:
      encoder: a SAM image encoder (TinyViT or ViT).
      compile: run it through ``torch.compile`` with frozen weights; the first call per
        input shape compiles (about a minute on 2 CPU cores).
      micro_batch: slices per call of the encoder.
      fuse_convolutions: fuse TinyViT's convolutions and linear layers with their GELU
        and its window attention into one call (float32 CPU weights only;
        ``fused_convolutions``, ``fused_linears``, ``fused_attention``).
      keep_memory: make malloc keep freed memory for the rest of the process
        (``heap.keep_freed_memory``; CPU weights only).
    """

    def __init__(
        self,
        encoder: nn.Module,
        compile: bool = True,
        micro_batch: int = DEFAULT_MICRO_BATCH,
        fuse_convolutions: bool = True,
        keep_memory: bool = True,
    ) -> None:
        super().__init__()
        fast = fold_batch_norms(copy.deepcopy(encoder)).eval().requires_grad_(False)
        if keep_memory and all(p.is_cpu for p in fast.parameters()):
            keep_freed_memory()
        if fuse_convolutions and can_fuse(fast):
            fuse_convolution_activations(fast)
            fuse_window_attention(fast)
            fuse_linear_activations(fast)
        fast = fast.to(memory_format=torch.channels_last)
        # Static shapes: nnU-Net feeds one patch size, and the dynamic-shape graph that
        # torch.compile falls back to after a second shape is slower to build and to run.
        self.encoder = (
            torch.compile(fast, dynamic=False, options={"freezing": True})
            if compile
            else fast
        )
        self.micro_batch = micro_batch

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.contiguous(memory_format=torch.channels_last).split(self.micro_batch)
        return torch.cat([self.encoder(chunk) for chunk in chunks])
