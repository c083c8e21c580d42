"""Gradient checkpointing of a SAM image encoder: each block's activations are recomputed
in the backward pass instead of kept from the forward pass.

A trained encoder keeps every block's activations for the backward pass, most of a
training step's memory at 1024 px. Checkpointed, a block keeps only its input and runs
its forward pass again when the backward pass reaches it: the memory of one block at a
time for one more forward pass of the encoder (the planner's cost model prices both,
``samnet.planners.cost_model``). Outputs and gradients are those of the plain encoder.

The blocks are SAM ViT's ``blocks`` and every block of every TinyViT stage (MBConv and
attention blocks; LiteMedSAM's and MobileSAM's first stage runs at the highest
resolution). Each keeps its class and parameter names, so base weights, PEFT and trained
checkpoints load as before: only the instance's ``forward`` is replaced.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn
from torch.utils.checkpoint import checkpoint

from samnet.core.errors import SamnetError
from samnet.models.tiny_vit import TinyViT


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The blocks of ``encoder`` that checkpointing recomputes, in forward order."""
    if isinstance(encoder, ImageEncoderViT):
        return list(encoder.blocks)
    if isinstance(encoder, TinyViT):
        return [block for stage in encoder.layers for block in stage.blocks]
    raise SamnetError(
        None,
        f"gradient checkpointing knows SAM ViT and TinyViT encoders, not a "
        f"{type(encoder).__name__}",
        "set the plan's sam.gradient_checkpointing to false, or re-plan with "
        "--gradient-checkpointing no",
    )


def checkpoint_encoder_blocks(encoder: nn.Module) -> nn.Module:
    """Make every block of ``encoder`` recompute its activations in the backward pass
    whenever it runs in training mode with autograd on; in place, returns ``encoder``.

    In evaluation mode or under ``torch.no_grad`` the blocks run as before.
    """
    for block in encoder_blocks(encoder):
        if not is_checkpointed(block):
            block.forward = functools.partial(_checkpointed_forward, block)
    return encoder


def is_checkpointed(block: nn.Module) -> bool:
    """Whether ``checkpoint_encoder_blocks`` made ``block`` recompute its activations."""
    forward = block.__dict__.get("forward")
    return getattr(forward, "func", None) is _checkpointed_forward


def _checkpointed_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``type(block).forward(block, x)``, recomputed in the backward pass when training."""
    forward = type(block).forward
    if not (block.training and torch.is_grad_enabled()):
        return forward(block, x)
    batchnorms = _batchnorms(block)
    # torch.compile takes only its own (selective checkpointing) contexts: there the
    # plain checkpoint runs.
    if not batchnorms or torch.compiler.is_compiling():
        return checkpoint(forward, block, x, use_reentrant=False)
    return checkpoint(
        forward,
        block,
        x,
        use_reentrant=False,
        context_fn=functools.partial(_contexts, batchnorms),
    )


def _batchnorms(block: nn.Module) -> list[nn.Module]:
    """``block``'s BatchNorm layers (TinyViT's convolutions carry one each)."""
    return [
        module
        for module in block.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]


def _contexts(
    batchnorms: list[nn.Module],
) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """Nothing around the forward pass; around its recomputation, the running statistics
    of ``batchnorms`` kept as they were: a trained BatchNorm updates them in every
    forward pass, and a step must update them once, as without checkpointing."""
    return contextlib.nullcontext(), _kept_statistics(batchnorms)


@contextlib.contextmanager
def _kept_statistics(batchnorms: list[nn.Module]) -> Iterator[None]:
    """Restore the buffers of ``batchnorms`` on exit."""
    buffers = [buffer for module in batchnorms for buffer in module.buffers()]
    kept = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, kept):
                buffer.copy_(value)
