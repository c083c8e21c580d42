"""Swapping modules of a model in place, the one walk every rewrite of a model shares."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def replace_modules(
    module: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]
) -> nn.Module:
    """Replace, in place, every module below ``module`` for which ``replacement`` returns
    a module by that module; inside a replaced one it looks no further. Returns
    ``module``."""
    for name, child in list(module.named_children()):
        new = replacement(child)
        if new is None:
            replace_modules(child, replacement)
        else:
            setattr(module, name, new)
    return module
