"""Interactive prediction: prompts carried into nnU-Net's preprocessed slices, and decoded
by every fold of a prompted model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SIZE, tiny_sam

from samnet.core.errors import SamnetError
from samnet.inference.interactive import (
    PromptedModel,
    predict_with_prompts,
    prompted_logits,
    to_preprocessed,
)
from samnet.inference.run import Options
from samnet.inference.selection import Member, Selection
from samnet.models.network import UNPROMPTED_LOGIT, SamSegmentationNetwork
from samnet.models.peft import PeftConfig, apply_peft
from samnet.models.shared_encoder import fold_mean_network
from samnet.prompting.prompts_file import SlicePrompt

# Cropped to rows 10-49 and columns 20-79 of slices 2-7, then resampled to half size.
PROPERTIES = {
    "bbox_used_for_cropping": [[2, 8], [10, 50], [20, 80]],
    "shape_after_cropping_and_before_resampling": (6, 40, 60),
}
SHAPE = (6, 20, 30)


def test_prompts_follow_cropping_and_resampling_into_the_preprocessed_slices() -> None:
    prompt = SlicePrompt(1, 4, box=(30.0, 20.0, 50.0, 40.0), points=((30.0, 20.0),))
    moved = to_preprocessed(prompt, [0, 1, 2], PROPERTIES, SHAPE)
    assert moved.slice == 2 and moved.label == 1
    assert moved.box == pytest.approx((5.0, 5.0, 15.0, 15.0))
    # pixel centres scale about their middle
    assert moved.points[0] == pytest.approx((4.75, 4.75))
    swapped = to_preprocessed(prompt, [0, 2, 1], PROPERTIES, SHAPE)
    # x and y trade places when nnU-Net swaps the in-plane axes
    assert swapped.box == pytest.approx(((20 - 20) * 0.5, (30 - 10) * 0.5, 10.0, 20.0))
    assert (
        to_preprocessed(
            SlicePrompt(1, 9, box=(0, 0, 1, 1)), [0, 1, 2], PROPERTIES, SHAPE
        )
        is None
    )
    with pytest.raises(SamnetError, match="slices along the input's axis 2"):
        to_preprocessed(prompt, [2, 0, 1], PROPERTIES, SHAPE)


def prompted_model(folds: int = 2) -> PromptedModel:
    torch.manual_seed(0)
    network = SamSegmentationNetwork(tiny_sam(), 1, 3, SIZE, "unit_range")
    network = apply_peft(network, PeftConfig(method="full", parts=("decoder",))).eval()
    states = []
    for fold in range(folds):
        state = network.trained_state_dict()
        name = next(n for n in state if n.startswith("sam.mask_decoder."))
        state[name] = state[name] + 0.1 * fold
        states.append(state)
    return PromptedModel(fold_mean_network(network, states), None, None, {})


def test_a_3d_box_gives_masks_on_its_slices_and_background_elsewhere() -> None:
    model = prompted_model()
    data = np.random.default_rng(0).normal(size=(1, 6, 40, 40)).astype(np.float32)
    prompts = [SlicePrompt(2, z, box=(5.0, 5.0, 30.0, 30.0)) for z in (1, 2, 3)]
    logits = prompted_logits(model, data, prompts)
    assert logits.shape == (3, 6, 40, 40)
    assert (logits[0] == 0).all() and (logits[1] == UNPROMPTED_LOGIT).all()
    for z in range(6):
        assert ((logits[2, z] != UNPROMPTED_LOGIT).any()) == (z in (1, 2, 3))
    with torch.no_grad():
        image = torch.from_numpy(data[:, 2])[None]
        folds = model.network.folds
        embeddings = folds[0].encode(image)
        each = [
            f.decode_prompted(
                embeddings, (40, 40), boxes=torch.tensor([[5.0, 5, 30, 30]])
            )
            for f in folds
        ]
    assert torch.allclose(logits[2, 2], torch.stack(each).mean(0)[0, 0], atol=1e-5)
    assert not torch.allclose(each[0], each[1])


def test_prompts_are_refused_for_a_model_not_trained_with_them(tmp_path: Path) -> None:
    member = Member(tmp_path / "nnUNetTrainerSAMCached__samnetPlans__sam_2d", (0,))
    selection = Selection("sam", (member,), None, "")
    with pytest.raises(
        SamnetError, match="prompts need one model trained with prompts"
    ):
        predict_with_prompts({}, tmp_path, selection, Options(), tmp_path / "p.json")
