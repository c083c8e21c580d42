"""Prompts from reference masks and the binary Dice used with them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samnet.prompts import binary_dice, box_from_mask


def test_box_is_tight_with_exclusive_end() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    assert box_from_mask(mask) == [3.0, 2.0, 9.0, 5.0]


def test_empty_mask_has_no_box() -> None:
    with pytest.raises(ValueError, match="empty"):
        box_from_mask(np.zeros((4, 4), dtype=bool))


def test_binary_dice() -> None:
    reference = np.array([1, 1, 0, 0], dtype=bool)
    assert binary_dice(reference, np.array([1, 0, 1, 0], dtype=bool)) == pytest.approx(
        0.5
    )
    assert binary_dice(reference, reference) == 1.0
    assert math.isnan(binary_dice(np.zeros(4, bool), np.zeros(4, bool)))
