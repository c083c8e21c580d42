"""Prompts simulated from reference masks, as an annotator would give them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def box_from_mask(mask: np.ndarray) -> list[float]:
    """Tight ``[x0, y0, x1, y1]`` box (pixels, exclusive end) around a non-empty 2D binary mask."""
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("cannot box an empty mask")
    return [
        float(columns.min()),
        float(rows.min()),
        float(columns.max() + 1),
        float(rows.max() + 1),
    ]


def interior_point(mask: np.ndarray) -> list[float]:
    """``[x, y]`` pixel indices of the pixel deepest inside a non-empty 2D binary mask.

    Where an annotator clicks: as far from the object's border as possible, so the point
    is inside even for a concave object; ties go to the first pixel in row-major order.
    Indices, as SAM's predictor takes points (its prompt encoder adds the half pixel).
    """
    if not mask.any():
        raise ValueError("cannot click inside an empty mask")
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, column = np.unravel_index(np.argmax(depth), depth.shape)
    return [float(column), float(row)]


def binary_dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two binary masks; NaN when both are empty (nnU-Net skips those)."""
    total = reference.sum() + prediction.sum()
    return (
        float(2 * np.logical_and(reference, prediction).sum() / total)
        if total
        else float("nan")
    )
