"""An encoder's linear layers on oneDNN, each TinyViT MLP's GELU fused into its first layer (CPU).

torch runs float32 linear layers on MKL's sgemm, and ``torch.compile`` keeps them there.
On AMD CPUs MKL takes a slow path: measured on an AMD EPYC (Zen 5, 2 threads) on every
linear shape of LiteMedSAM's encoder, oneDNN 466-508 GFLOP/s against MKL's 207-233, with
the same float32 arithmetic (2048 x 2048 product within 1.1e-6 relative of float64).
The op is wrapped as a custom op: inductor lowers oneDNN's own linear op only for weights
it packed itself, which it does for float32 with MKL.
"""

from __future__ import annotations

import torch
from torch import nn

from samnet.models.module_replacement import replace_modules
from samnet.models.tiny_vit import Mlp


@torch.library.custom_op("samnet::linear_pointwise", mutates_args=())
def linear_pointwise(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str
) -> torch.Tensor:
    """``activation(x @ weight.T + bias)`` in one oneDNN call: ``... x in`` -> ``... x out``.

    ``activation`` is ``"none"`` or ``"gelu"`` (the exact, erf form).
    """
    algorithm = "none" if activation == "gelu" else ""
    return torch.ops.mkldnn._linear_pointwise(
        x.contiguous(), weight, bias, activation, [], algorithm
    )


@linear_pointwise.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


class LinearPointwise(nn.Module):
    """``activation(linear(x))`` on oneDNN: ``... x in_features`` -> ``... x out_features``.

    Arguments:
      linear: the layer whose weights (and bias, zero if it has none) are taken.
      activation: ``"gelu"`` or ``"none"``.
    """

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        weight = linear.weight.detach()
        bias = linear.bias if linear.bias is not None else weight.new_zeros(len(weight))
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_pointwise(x, self.weight, self.bias, self.activation)


class FusedMlp(nn.Module):
    """TinyViT's ``Mlp`` with its GELU inside the first layer's call: ``... x dim``."""

    def __init__(self, mlp: Mlp) -> None:
        super().__init__()
        self.norm = mlp.norm
        self.fc1 = LinearPointwise(mlp.fc1, "gelu")
        self.fc2 = LinearPointwise(mlp.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.norm(x)))


def fuse_linear_activations(module: nn.Module) -> nn.Module:
    """Replace, in place, every TinyViT ``Mlp`` of two plain linear layers below ``module``
    by ``FusedMlp`` and every other ``nn.Linear`` (LoRA's and adapters' own included) by
    ``LinearPointwise``: the same outputs up to float rounding. An ``Mlp`` whose layers are
    wrapped (by LoRA) keeps its separate GELU."""
    return replace_modules(module, fused_linear)


def fused_linear(layer: nn.Module) -> nn.Module | None:
    """``FusedMlp`` for an ``Mlp`` of two plain linear layers, ``LinearPointwise`` for a
    plain ``nn.Linear``; None for any other module."""
    if isinstance(layer, Mlp) and all(
        type(linear) is nn.Linear for linear in (layer.fc1, layer.fc2)
    ):
        return FusedMlp(layer)
    if type(layer) is nn.Linear:
        return LinearPointwise(layer)
    return None
