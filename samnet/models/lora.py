"""LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from samnet.models.module_replacement import replace_modules


class LoRALinear(nn.Module):
    """``y = W x + b + (alpha / rank) * B(A(dropout(x)))``, ``(..., in) -> (..., out)``.

    ``W`` and ``b`` are the wrapped ``nn.Linear``'s own parameters, registered under the
    same names (``weight``, ``bias``) and not copied: state-dict keys of the base model
    stay the same, so base checkpoints load into an adapted model and a merged model
    saves as a plain one. ``A`` (``rank x in``) starts Kaiming-uniform as in
    ``nn.Linear`` and ``B`` (``out x rank``) starts at zero, so a new wrapper computes
    exactly what the wrapped layer did.

    Arguments:
      linear: the layer to adapt; its parameters keep their ``requires_grad``.
      rank: r, the inner dimension of the update.
      alpha: the update is scaled by ``alpha / rank``.
      dropout: dropout probability on the update's input only.
    """

    def __init__(
        self, linear: nn.Linear, rank: int, alpha: float, dropout: float
    ) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_parameter("weight", linear.weight)
        self.register_parameter("bias", linear.bias)
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        factory = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        self.lora_a = nn.Linear(self.in_features, rank, bias=False, **factory)
        self.lora_b = nn.Linear(rank, self.out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.lora_b(self.lora_a(self.dropout(x)))
        return F.linear(x, self.weight, self.bias) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding ``W + (alpha / rank) * B @ A``."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            delta = self.lora_b.weight @ self.lora_a.weight
            linear.weight.copy_(self.weight + self.scale * delta)
            linear.weight.requires_grad_(self.weight.requires_grad)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
                linear.bias.requires_grad_(self.bias.requires_grad)
        return linear

    def extra_repr(self) -> str:
        rank = self.lora_a.out_features
        return (
            f"{self.in_features}, {self.out_features}, rank={rank}, scale={self.scale}"
        )


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each ``LoRALinear`` in ``model`` by its merged ``nn.Linear``, in place.

    For inference and export: the result has the base model's modules and state-dict
    keys again. Save a trained checkpoint before merging: merged weights are frozen
    base weights, which ``save_trained`` leaves out. Returns ``model``.
    """
    return replace_modules(
        model, lambda child: child.merged() if isinstance(child, LoRALinear) else None
    )
