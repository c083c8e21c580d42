"""The torch device a command's ``--device`` (auto, cpu, cuda) names."""

from __future__ import annotations

import torch

from samnet.core.errors import SamnetError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SamnetError(
            None,
            "--device cuda was asked for but no CUDA GPU is visible",
            "use --device cpu or auto",
        )
    if name not in ("cpu", "cuda"):
        raise SamnetError(
            None, f"unknown device '{name}'", "use one of auto, cpu, cuda"
        )
    return torch.device(name)
