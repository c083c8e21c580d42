"""Bottleneck adapters (Houlsby et al. 2019) on the MLP output of transformer blocks."""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """``x + up(gelu(down(x)))``, ``(..., dim) -> (..., dim)``.

    The up-projection starts at zero (weight and bias), so a new adapter is exactly
    the identity and the adapted model starts as the base model.

    Arguments:
      dim: channels of the adapted output.
      hidden_dim: bottleneck width.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden_dim, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


def attach_adapter(mlp: nn.Module, ratio: float) -> Adapter:
    """Run the output of ``mlp`` through a new adapter: ``adapter(mlp(x))``.

    Placement: sequential, after a block's MLP and before the block's residual sum, the
    second of Houlsby's two adapters. The adapter is registered as ``mlp.adapter`` and
    called by a forward hook rather than by a wrapper module, so every base parameter
    keeps its name and base checkpoints still load.

    Arguments:
      mlp: a block's MLP whose last ``nn.Linear`` gives the output channels (SAM's
        ``lin2``, TinyViT's ``fc2``). Its ``forward`` must not iterate its children.
      ratio: bottleneck width as a fraction of the output channels (at least 1).
    """
    if isinstance(mlp, (nn.Sequential, nn.ModuleList)) or hasattr(mlp, "adapter"):
        raise ValueError(f"cannot attach an adapter to {type(mlp).__name__}")
    linears = [module for module in mlp.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(mlp).__name__} has no nn.Linear to size an adapter")
    dim = linears[-1].out_features
    parameter = linears[-1].weight
    adapter = Adapter(dim, max(1, round(dim * ratio)))
    mlp.adapter = adapter.to(device=parameter.device, dtype=parameter.dtype)
    mlp.register_forward_hook(_run_adapter)
    return adapter


def _run_adapter(mlp: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return mlp.adapter(output)
