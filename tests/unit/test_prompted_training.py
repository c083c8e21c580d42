"""Prompted fine-tuning: prompts turned into class logits, learning from them, the plan
that asks for it and the trainer it gets."""

from __future__ import annotations

import pytest
import torch
from helpers import HIPPOCAMPUS_LIKE, SIZE, decision, plan, tiny_sam
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from samnet.core.errors import SamnetError
from samnet.core.methods import PROMPTED_TRAINER, sam_method
from samnet.models.network import (
    UNPROMPTED_LOGIT,
    EncodedImages,
    SamSegmentationNetwork,
)
from samnet.models.object_prompt import ObjectPrompt
from samnet.models.peft import PeftConfig, apply_peft

CLASSES = 4
BOX = ObjectPrompt(1, box=[4.0, 4.0, 20.0, 20.0])
CLICK = ObjectPrompt(3, points=[[30.0, 30.0], [5.0, 40.0]], point_labels=[1, 0])


def network() -> SamSegmentationNetwork:
    model = SamSegmentationNetwork(tiny_sam(), 1, CLASSES, SIZE, "unit_range")
    return apply_peft(model, PeftConfig(method="full", parts=("decoder",)))


def test_prompted_classes_get_their_mask_logit_the_others_nothing() -> None:
    torch.manual_seed(0)
    model = network().eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        embeddings = model.encode(x)
        logits = model.decode_class_prompts(embeddings, (48, 48), [[BOX, CLICK], []])
        box_mask = model.decode_prompted(
            embeddings[:1], (48, 48), boxes=torch.tensor([BOX.box])
        )
    assert logits.shape == (2, CLASSES, 48, 48)
    assert (logits[:, 0] == 0).all()
    assert torch.allclose(logits[0, 1], box_mask[0, 0])
    assert (logits[0, 2] == UNPROMPTED_LOGIT).all()
    assert (logits[0, 3] != UNPROMPTED_LOGIT).any()
    assert (logits[1, 1:] == UNPROMPTED_LOGIT).all()


def test_forward_follows_the_prompts_of_encoded_images_and_learns() -> None:
    torch.manual_seed(0)
    model = network()
    with torch.no_grad():
        embeddings = model.encode(torch.randn(2, 1, 48, 48))
    target = torch.zeros(2, 1, 48, 48)
    target[0, 0, 4:20, 4:20] = 1
    target[1, 0, 25:40, 25:40] = 3
    prompts = [[BOX], [ObjectPrompt(3, box=[25.0, 25.0, 40.0, 40.0])]]
    prompted = EncodedImages(embeddings, (48, 48), prompts=prompts)
    loss_function = DC_and_CE_loss(
        {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
        {},
        weight_ce=1,
        weight_dice=1,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=3e-3
    )
    losses = []
    for _ in range(30):
        loss = loss_function(model(prompted), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    prompt_free = EncodedImages(embeddings, (48, 48))
    assert model(prompt_free).shape == (2, CLASSES, 48, 48)  # the prompt-free head


def test_the_plan_records_the_prompt_kinds_and_trains_on_cached_embeddings() -> None:
    result = plan(HIPPOCAMPUS_LIKE, prompts="box,point")
    assert result.sam.prompts == ("box", "point")
    assert result.sam.encoder_mode == "cached"
    assert decision(result, "prompts")["value"] == "box, point"
    block = result.sam.to_dict()
    assert sam_method("samnetPlans", "sam_2d", block).trainer == PROMPTED_TRAINER
    assert plan(HIPPOCAMPUS_LIKE).sam.prompts is None
    assert decision(plan(HIPPOCAMPUS_LIKE), "prompts")["value"] == "off"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompts": "scribble"}, "the kinds are box, point"),
        ({"prompts": "box", "few_shot": 5}, "different models"),
        ({"prompts": "box", "encoder_mode": "trained"}, "prompted training trains"),
    ],
)
def test_prompts_the_planner_cannot_plan_are_clear_errors(overrides, message) -> None:
    with pytest.raises(SamnetError, match=message):
        plan(HIPPOCAMPUS_LIKE, **overrides)
