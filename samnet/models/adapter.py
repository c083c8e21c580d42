"""Bottleneck adapters in transformer blocks, in one of two placements.

An adapter is a small MLP ``f(x) = up(gelu(down(x)))`` of bottleneck width ``ratio`` x
the block's channels. Adapters are registered on the block's own modules and called by
hooks, not by wrapper modules, so every base parameter keeps its name and base
checkpoints still load. Placements (``samnet.core.peft_choices.ADAPTER_PLACEMENTS``):

``attention_and_parallel_mlp`` (the default): Medical SAM Adapter's placement (Wu et al.
2023, ``models/ImageEncoder/vit/adapter_block.py``), which Gu et al. 2024 used for every
adapter strategy of their study (github.com/mazurowski-lab/finetune-SAM,
``models/sam/modeling/``). Per block, one adapter with its own skip after attention and
one beside the MLP, added scaled by ``PARALLEL_SCALE``:

- encoder blocks (SAM ViT, TinyViT): ``x = x + a(attn(norm1(x)))`` with
  ``a(y) = y + f1(y)``, then ``x = x + mlp(z) + s * f2(z)`` where ``z`` is the MLP's
  input (``norm2(x)`` in SAM ViT; TinyViT's MLP normalises inside, so there ``z`` is
  the un-normalised tokens, as in Gu et al.'s TinyViT);
- decoder (two-way transformer blocks), as Gu et al.: after the residual sum of each
  cross-attention, before the norm that follows it: ``queries = norm2(a_q(queries +
  cross_attn_token_to_image(...)))``, ``keys = norm4(a_k(keys +
  cross_attn_image_to_token(...)))``, and the MLP as in the encoder. Gu et al.'s code runs
  one adapter on both streams; samnet gives the tokens and the image features one each.

``sequential_mlp``: one adapter on the MLP's output, before the block's residual sum
(Houlsby et al. 2019's second adapter): ``x = x + a(mlp(...))``. samnet's only placement
before the choice existed; plans and checkpoints that do not name a placement use it.

Why the default is Gu et al.'s: it is the placement their study measured, and samnet's
PEFT rule rests on that study ("PEFT in encoder and decoder is best"), so ``adapter`` in
a plan means what it meant there; it adapts both sub-layers of a block, attention and
MLP, where the sequential placement only reshapes the MLP's output. It costs twice the
adapters: at ratio 0.25 a ViT-B encoder gets 7.1 M adapter parameters (8% of its 89 M)
instead of 3.5 M, LiteMedSAM's TinyViT 0.40 M instead of 0.20 M. samnet has not
measured the two against each other on its own data.

Both placements start exactly as the base model: up-projections start at zero.
(Medical SAM Adapter and Gu et al. start them random, so their adapted model differs
from the pre-trained one before the first step.)
"""

from __future__ import annotations

import torch
from segment_anything.modeling.transformer import TwoWayAttentionBlock
from torch import nn

from samnet.core.peft_choices import ADAPTER_PLACEMENTS

# The parallel adapter's output scale s: Medical SAM Adapter's and Gu et al.'s 0.5.
PARALLEL_SCALE = 0.5


class Adapter(nn.Module):
    """``x + up(gelu(down(x)))``, or the bottleneck alone without ``residual``;
    ``(..., dim) -> (..., dim)``.

    The up-projection starts at zero (weight and bias): a new adapter is the identity
    (``residual``) or adds nothing (beside a layer), so the adapted model starts as the
    base model.

    Arguments:
      dim: channels of the adapted tensor.
      hidden_dim: bottleneck width.
      residual: add the input to the bottleneck's output.
    """

    def __init__(self, dim: int, hidden_dim: int, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.down = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden_dim, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.up(self.act(self.down(x)))
        return x + update if self.residual else update


def attach_adapters(block: nn.Module, placement: str, ratio: float) -> list[Adapter]:
    """Put adapters into one transformer block as ``placement`` says; returns them.

    Arguments:
      block: a block with a child ``mlp`` and attention children (SAM ViT ``Block``,
        TinyViT block, or segment-anything's ``TwoWayAttentionBlock``).
      placement: one of ``ADAPTER_PLACEMENTS`` (module docstring).
      ratio: bottleneck width as a fraction of the adapted channels (at least 1).
    """
    if placement not in ADAPTER_PLACEMENTS:
        raise ValueError(
            f"adapter placement {placement!r} is not one of {ADAPTER_PLACEMENTS}"
        )
    if placement == "sequential_mlp":
        adapter = _register(block.mlp, "adapter", ratio, residual=True)
        block.mlp.register_forward_hook(_adapt_output)
        return [adapter]
    adapters = []
    if isinstance(block, TwoWayAttentionBlock):
        # The token stream after token-to-image attention, the image stream after
        # image-to-token attention: each adapted on its way into the next norm.
        for norm in (block.norm2, block.norm4):
            adapters.append(_register(norm, "adapter", ratio, residual=True))
            norm.register_forward_pre_hook(_adapt_input)
    else:
        attention = _only_attention(block)
        adapters.append(_register(attention, "adapter", ratio, residual=True))
        attention.register_forward_hook(_adapt_output)
    adapters.append(_register(block.mlp, "parallel_adapter", ratio, residual=False))
    block.mlp.register_forward_hook(_add_parallel_adapter)
    return adapters


def _only_attention(block: nn.Module) -> nn.Module:
    found = [child for name, child in block.named_children() if "attn" in name]
    if len(found) != 1:
        raise ValueError(
            f"{type(block).__name__} has {len(found)} attention children; an encoder "
            "block needs exactly one to place an adapter after it"
        )
    return found[0]


def _register(module: nn.Module, name: str, ratio: float, residual: bool) -> Adapter:
    """A new adapter sized to ``module``'s channels, registered as ``module.<name>``."""
    if isinstance(module, (nn.Sequential, nn.ModuleList)) or hasattr(module, name):
        # A container would run a new child as a layer of its own.
        raise ValueError(f"cannot register an adapter on {type(module).__name__}")
    dim = _channels(module)
    parameter = next(module.parameters())
    adapter = Adapter(dim, max(1, round(dim * ratio)), residual)
    setattr(module, name, adapter.to(device=parameter.device, dtype=parameter.dtype))
    return adapter


def _channels(module: nn.Module) -> int:
    """The channels ``module`` outputs: a LayerNorm's width, else its last Linear's."""
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    linears = [child for child in module.modules() if isinstance(child, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no nn.Linear to size an adapter")
    return linears[-1].out_features


def _adapt_output(
    module: nn.Module, inputs: tuple, output: torch.Tensor
) -> torch.Tensor:
    return module.adapter(output)


def _adapt_input(module: nn.Module, inputs: tuple) -> tuple:
    return (module.adapter(inputs[0]), *inputs[1:])


def _add_parallel_adapter(
    mlp: nn.Module, inputs: tuple, output: torch.Tensor
) -> torch.Tensor:
    return output + PARALLEL_SCALE * mlp.parallel_adapter(inputs[0])
