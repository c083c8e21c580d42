"""Prompts from reference masks and the binary Dice used with them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samnet.prompting.prompted_sam import segment_volume
from samnet.prompting.simulated import (
    binary_dice,
    box_from_mask,
    interior_point,
    jittered_box,
    sampled_clicks,
    simulate_prompts,
)


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


def test_interior_point_is_deep_inside_even_for_a_concave_object() -> None:
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:11, 1:11] = True
    mask[1:7, 4:8] = False  # a U, open at the top: its centroid lies in the gap
    rows, columns = np.nonzero(mask)
    assert not mask[round(rows.mean()), round(columns.mean())]
    x, y = interior_point(mask)
    column, row = int(x), int(y)
    assert (x, y) == (column, row)
    # Inside, and not on the border: all 8 neighbours are inside too.
    assert mask[row - 1 : row + 2, column - 1 : column + 2].all()


def test_empty_mask_has_no_click() -> None:
    with pytest.raises(ValueError, match="empty"):
        interior_point(np.zeros((4, 4), dtype=bool))


class RecordingNetwork:
    """Encodes by counting; decodes by recording the prompts and answering a fixed square
    per prompt, with logits growing with the prompt's rank."""

    def __init__(self) -> None:
        self.encoded = 0
        self.calls: list[dict] = []

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        self.encoded += 1
        return image

    def decode_prompted(
        self, embeddings, size, boxes=None, points=None, point_labels=None
    ):
        self.calls.append({"boxes": boxes, "points": points, "labels": point_labels})
        count = len(boxes) if boxes is not None else len(points)
        logits = -torch.ones(count, 1, *size)
        for k in range(count):
            logits[k, 0, 2 * k : 2 * k + 3, 2 * k : 2 * k + 3] = 1.0 + k
        return logits


def test_volume_is_encoded_and_prompted_once_per_slice_with_a_class() -> None:
    reference = np.zeros((3, 8, 8), dtype=np.uint8)
    reference[0, 1:3, 1:3] = 1
    reference[0, 5:7, 5:7] = 2
    reference[2, 4:6, 4:6] = 2
    network = RecordingNetwork()
    labels = segment_volume(network, np.zeros((1, 3, 8, 8)), reference, [1, 2])
    # Slice 1 has no class: no prompt, no encoding; the others: one encoding, 2 kinds.
    assert network.encoded == 2 and len(network.calls) == 4
    box, point = network.calls[0], network.calls[1]
    assert box["boxes"].tolist() == [[1, 1, 3, 3], [5, 5, 7, 7]]
    assert point["points"].shape == (2, 1, 2) and (point["labels"] == 1).all()
    for kind in ("box", "point"):
        volume = labels[kind]
        assert volume.shape == (3, 8, 8) and not volume[1].any()
        # The two answers overlap at (2..4, 2..4): class 2's larger logit wins there.
        assert volume[0, 0, 0] == 1 and volume[0, 2, 2] == 2 and volume[0, 4, 4] == 2
        assert volume[2, 0, 0] == 2  # the only class of slice 2 is its first prompt


def test_jittered_boxes_stay_in_the_image_within_the_jitter_of_the_tight_box() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[0:8, 20:30] = True  # touches the top and right border
    tight = np.array(box_from_mask(mask))
    extent = np.array([10, 8, 10, 8])
    generator = np.random.default_rng(0)
    boxes = np.array([jittered_box(mask, generator, jitter=0.2) for _ in range(300)])
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= 30).all()
    assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= 20).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (np.abs(boxes - tight) <= 0.2 * extent + 1e-9).all()
    assert (np.abs(boxes - tight) > 0.1 * extent).any()  # it does move the sides
    assert jittered_box(mask, generator, jitter=0.0) == list(tight)


def test_clicks_are_inside_and_outside_near_the_object() -> None:
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:30, 10:20] = True
    generator = np.random.default_rng(1)
    for _ in range(50):
        points, labels = sampled_clicks(mask, generator, positives=2, negatives=3)
        assert labels == [1, 1, 0, 0, 0]
        for (x, y), label in zip(points, labels):
            assert mask[int(y), int(x)] == bool(label)
            if label:  # from the deeper half: at least 2.5 px from the border
                assert 12 <= x <= 17 and 12 <= y <= 27
            else:  # within 5 px of the object
                assert 5 <= x < 25 and 5 <= y < 35
    full = np.ones((6, 6), dtype=bool)
    points, labels = sampled_clicks(full, generator, positives=1, negatives=2)
    assert labels == [1]  # nothing outside to click
    with pytest.raises(ValueError, match="empty"):
        sampled_clicks(np.zeros((4, 4), dtype=bool), generator)


def test_simulated_prompts_cover_the_classes_present_and_nothing_else() -> None:
    reference = np.zeros((30, 30), dtype=np.int64)
    reference[2:10, 3:12] = 1
    reference[15:25, 15:28] = 3
    generator = np.random.default_rng(0)
    kinds_seen = set()
    for _ in range(40):
        prompts = simulate_prompts(reference, [1, 2, 3], ("box", "point"), generator)
        assert [p.label for p in prompts] == [1, 3]
        for prompt in prompts:
            mask = reference == prompt.label
            if prompt.box is not None:
                kinds_seen.add("box")
                assert prompt.points is None
                assert np.allclose(prompt.box, box_from_mask(mask), atol=0.1 * 13)
            else:
                kinds_seen.add("point")
                assert len(prompt.points) == len(prompt.point_labels) == 2
                for (x, y), label in zip(prompt.points, prompt.point_labels):
                    assert label == -1 or mask[int(y), int(x)] == bool(label)
    assert kinds_seen == {"box", "point"}
    only_boxes = simulate_prompts(reference, [1, 3], ("box",), generator)
    assert all(p.box is not None for p in only_boxes)
    assert simulate_prompts(np.zeros((5, 5), int), [1], ("box",), generator) == []
