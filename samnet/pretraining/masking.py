"""Random patch masks for masked image modelling."""

from __future__ import annotations

import torch


def random_patch_mask(
    batch: int, grid: int, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``B x grid x grid`` booleans, True where a patch is hidden: exactly
    ``round(ratio * grid**2)`` patches per image, drawn uniformly without replacement."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"the mask ratio must be between 0 and 1, got {ratio}")
    count = round(ratio * grid * grid)
    order = torch.rand(batch, grid * grid, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, grid * grid, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    return mask.view(batch, grid, grid)


def pixel_mask(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """Patch mask ``B x g x g`` -> float pixel mask ``B x 1 x (g * patch) x (g * patch)``."""
    pixels = mask.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)
    return pixels.unsqueeze(1).float()
