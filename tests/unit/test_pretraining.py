"""Continued self-supervised pre-training: masks, the reconstruction, and the new base
checkpoint with its identity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HIPPOCAMPUS_LIKE, SIZE, plan, tiny_sam

from samnet.cli.plan import parse_arguments as plan_arguments
from samnet.cli.pretrain import parse_arguments as pretrain_arguments
from samnet.core.errors import SamnetError
from samnet.models.backbones import build_sam, get_backbone
from samnet.models.checkpoint_files import BaseWeights, identity_path
from samnet.models.gradient_checkpointing import checkpoint_encoder_blocks
from samnet.models.input_adapter import InputAdapter
from samnet.models.lr_schedule import warmup_decay_factor
from samnet.models.network import build_network
from samnet.pipeline.options import PretrainOptions
from samnet.pipeline.pretrain_budget import (
    PretrainPlan,
    gpu_pretrain_slices,
    pretrain_hardware,
    pretrain_plan,
)
from samnet.planners.cost_model import step_cost
from samnet.planners.hardware import Hardware
from samnet.pretraining.identity import save_pretrained_base
from samnet.pretraining.loop import PretrainBudget, pretrain
from samnet.pretraining.masked_image_model import MaskedImageModel
from samnet.pretraining.masking import pixel_mask, random_patch_mask
from samnet.pretraining.slices import slice_windows


def test_patch_mask_hides_the_ratio_of_patches_in_every_image() -> None:
    mask = random_patch_mask(5, 8, 0.6, torch.Generator().manual_seed(0))
    assert mask.shape == (5, 8, 8) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(dim=1).tolist() == [38] * 5  # round(0.6 * 64)
    assert not torch.equal(mask[0], mask[1])
    pixels = pixel_mask(mask, 4)
    assert pixels.shape == (5, 1, 32, 32)
    assert torch.equal(pixels[:, 0, ::4, ::4].bool(), mask)
    assert torch.equal(pixels[:, 0, 3::4, 3::4].bool(), mask)
    with pytest.raises(ValueError, match="between 0 and 1"):
        random_patch_mask(1, 4, 1.0)


def masked_model() -> MaskedImageModel:
    sam = tiny_sam()
    adapter = InputAdapter(1, SIZE, "unit_range")
    return MaskedImageModel(
        adapter, sam.image_encoder, 8, embedding_dim=32, mask_patch=16
    )


def test_reconstruction_predicts_the_backbone_input_and_scores_hidden_pixels_only() -> (
    None
):
    torch.manual_seed(0)
    model = masked_model()
    result = model(torch.randn(3, 1, 40, 48), torch.Generator().manual_seed(1))
    assert result.prediction.shape == result.target.shape == (3, 3, SIZE, SIZE)
    assert result.mask.shape == (3, 1, SIZE, SIZE)
    assert result.mask.mean().item() == pytest.approx(round(0.6 * 16) / 16)
    assert 0.0 <= result.target.min() and result.target.max() <= 1.0  # unit range
    hidden = result.mask.expand_as(result.target).bool()
    expected = (result.prediction - result.target).abs()[hidden].mean()
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_loss_falls_on_a_tiny_set_and_the_input_adapter_stays_frozen() -> None:
    torch.manual_seed(0)
    model = masked_model()
    images = torch.rand(4, 1, SIZE, SIZE).cumsum(dim=-1)  # smooth ramps: predictable
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3
    )
    losses = []
    for step in range(40):
        result = model(images, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert not any(p.requires_grad for p in model.input_adapter.parameters())


@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """LiteMedSAM-shaped weights (random, changed) saved as a continuation of LiteMedSAM."""
    spec = get_backbone("lite_medsam")
    sam, _ = build_sam("lite_medsam", pretrained=False, image_size=128)
    with torch.no_grad():
        sam.image_encoder.patch_embed.seq[0].c.weight.add_(1.0)
    parent = BaseWeights("lite_medsam", "/weights/lite_medsam.pth", spec.sha256)
    path = tmp_path_factory.mktemp("ssl") / "lite_medsam_ssl.pth"
    base = save_pretrained_base(
        sam, spec, path, parent, {"dataset": "Demo", "steps": 3}
    )
    return path, {"base": base, "state": sam.state_dict()}


def test_pretrained_weights_load_strictly_with_their_own_identity(
    pretrained_file,
) -> None:
    path, saved = pretrained_file
    identity = json.loads(identity_path(path).read_text())
    assert identity["sha256"] == saved["base"].sha256
    assert identity["parent_sha256"] == get_backbone("lite_medsam").sha256
    assert identity["dataset"] == "Demo" and identity["steps"] == 3
    network, base = build_network("lite_medsam", 1, 3, image_size=128, checkpoint=path)
    assert base == saved["base"]
    name = "image_encoder.patch_embed.seq.0.c.weight"
    assert torch.equal(network.sam.state_dict()[name], saved["state"][name])


@pytest.mark.parametrize("damage", ["weights changed", "other parent", "no identity"])
def test_pretrained_weights_that_do_not_match_their_identity_are_refused(
    pretrained_file, tmp_path: Path, damage: str
) -> None:
    path, _ = pretrained_file
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    identity = json.loads(identity_path(path).read_text())
    if damage == "weights changed":
        copy.write_bytes(path.read_bytes() + b"\0")
    if damage == "other parent":
        identity["parent_sha256"] = "0" * 64
    if damage != "no identity":
        identity_path(copy).write_text(json.dumps(identity))
    message = "identity.json beside them" if damage == "no identity" else "not '"
    with pytest.raises(SamnetError, match=message):
        build_sam("lite_medsam", checkpoint=copy, image_size=128)


def test_slice_windows_are_random_windows_of_slices_padded_to_the_patch() -> None:
    cases = [
        np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) + 1000 * i
        for i in range(2)
    ]
    batches = slice_windows(cases, (6, 3), batch_size=4, seed=0)
    batch = next(batches)
    assert batch.shape == (4, 2, 6, 3)
    assert (batch[:, :, 4:] == 0).all()  # 4 rows of image, padded to 6
    for window in batch:
        found = [
            (c, z)
            for c, case in enumerate(cases)
            for z in range(3)
            for left in range(3)
            if np.array_equal(case[:, z, :, left : left + 3], window[:, :4].numpy())
        ]
        assert found
    again = next(slice_windows(cases, (6, 3), batch_size=4, seed=0))
    assert torch.equal(batch, again)


class Interrupted(Exception):
    pass


def test_pretraining_resumes_where_it_was_interrupted(tmp_path: Path) -> None:
    budget = PretrainBudget(steps=6, batch_size=2, learning_rate=1e-3, save_every=3)
    state = tmp_path / "state.pth"

    def batches(seed: int, stop_after: int | None = None):
        generator = torch.Generator().manual_seed(seed)
        count = 0
        while stop_after is None or count < stop_after:
            count += 1
            yield torch.rand(2, 1, SIZE, SIZE, generator=generator)
        raise Interrupted

    torch.manual_seed(0)
    with pytest.raises(Interrupted):
        pretrain(
            masked_model(), lambda s: batches(s, 4), budget, state, torch.device("cpu")
        )
    saved = torch.load(state, weights_only=True)
    assert len(saved["losses"]) == 3
    torch.manual_seed(0)
    model = masked_model()
    losses = pretrain(model, batches, budget, state, torch.device("cpu"))
    assert len(losses) == 6 and losses[:3] == saved["losses"]
    assert torch.equal(
        torch.load(state, weights_only=True)["model"]["fill"], model.fill.detach()
    )


def test_plan_and_train_pretrains_when_the_plan_asks_and_no_run_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # imports nnunetv2, which reads nnUNet_* at import: only once the test has set them
    from samnet.pipeline.plan_and_train import pretraining_planned

    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    plans = tmp_path / "samnetPlans.json"

    def plan_asking(pretrain: bool, backbone: str = "lite_medsam") -> Path:
        sam = plan(HIPPOCAMPUS_LIKE, pretrain=pretrain, backbone=backbone).sam
        plans.write_text(
            json.dumps({"configurations": {"sam_2d": {"sam": sam.to_dict()}}})
        )
        return plans

    assert pretraining_planned(plan_asking(True), "Dataset001_Demo")
    assert not pretraining_planned(plan_asking(False), "Dataset001_Demo")
    done = tmp_path / "results" / "Dataset001_Demo" / "samnet_pretrain"
    done.mkdir(parents=True)
    (done / "lite_medsam_pretrained.pth").write_bytes(b"")
    (done / "pretrain.json").write_text("{}")
    assert not pretraining_planned(plan_asking(True), "Dataset001_Demo")
    assert pretraining_planned(plan_asking(True, "sam_vit_b"), "Dataset001_Demo")

    assert plan_arguments(["4", "--pretrain", "yes"]).pretrain is True
    assert plan_arguments(["4", "--pretrain", "no"]).pretrain is False
    with pytest.raises(SystemExit):
        plan_arguments(["4", "--pretrain", "maybe"])


def test_on_cpu_a_step_is_the_float32_step_it_was_before_amp(tmp_path: Path) -> None:
    """The loss scaler and autocast are pass-throughs on CPU: the losses are those of the
    plain float32 loop, to the bit."""
    budget = PretrainBudget(steps=4, batch_size=2, learning_rate=1e-3)

    def batches(seed: int):
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield torch.rand(2, 1, SIZE, SIZE, generator=generator)

    torch.manual_seed(0)
    losses = pretrain(
        masked_model(), batches, budget, tmp_path / "state.pth", torch.device("cpu")
    )
    assert torch.load(tmp_path / "state.pth", weights_only=True)["grad_scaler"] == {}
    torch.manual_seed(0)
    model = masked_model().train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_decay_factor(step, 4, 1, "cosine")
    )
    stream, expected = batches(0), []
    for _ in range(4):
        result = model(next(stream))
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        expected.append(result.loss.item())
    assert losses == expected


CUDA_CARDS = {
    "H100 80 GB": Hardware("cuda", 16, 256.0, "NVIDIA H100", 80.0, 50_000.0),
    "A100 40 GB": Hardware("cuda", 16, 256.0, "NVIDIA A100", 40.0, 19_500.0),
    "24 GB": Hardware("cuda", 8, 64.0, "NVIDIA RTX 4090", 24.0, 80_000.0),
    "8 GB": Hardware("cuda", 4, 32.0, "NVIDIA RTX 3070", 8.0, 20_000.0),
}
DEVICE_DEFAULT = PretrainOptions(steps=None, batch_size=None)


def test_the_cpu_budget_is_unchanged_and_the_user_s_options_win() -> None:
    spec = get_backbone("lite_medsam")
    on_cpu = pretrain_plan(DEVICE_DEFAULT, spec, 128, None)
    assert on_cpu == PretrainPlan(PretrainBudget(300, 8, 1e-4), False)
    for hardware in (None, CUDA_CARDS["H100 80 GB"]):
        chosen = PretrainOptions(steps=40, batch_size=4, learning_rate=3e-4)
        budget = pretrain_plan(chosen, spec, 256, hardware).budget
        assert (budget.steps, budget.batch_size, budget.learning_rate) == (40, 4, 3e-4)


@pytest.mark.parametrize("card", CUDA_CARDS)
@pytest.mark.parametrize(
    ("backbone", "input_size"),
    [
        ("lite_medsam", 128),
        ("lite_medsam", 256),
        ("sam_vit_b", 256),
        ("sam_vit_b", 1024),
    ],
)
def test_on_cuda_the_default_budget_is_sized_for_the_gpu(
    card: str, backbone: str, input_size: int
) -> None:
    spec, hardware = get_backbone(backbone), CUDA_CARDS[card]
    if (backbone, input_size, card) == ("sam_vit_b", 1024, "8 GB"):
        with pytest.raises(
            SamnetError, match="even with gradient checkpointing"
        ) as error:
            pretrain_plan(DEVICE_DEFAULT, spec, input_size, hardware)
        assert "--batch-size 1" in error.value.fix
        return
    planned = pretrain_plan(DEVICE_DEFAULT, spec, input_size, hardware)
    budget, slices = planned.budget, gpu_pretrain_slices(spec, input_size)
    # Steps of the batch cover the slices the compute budget buys, and no more.
    assert budget.steps == math.ceil(slices / budget.batch_size)
    assert budget.steps * budget.batch_size >= slices > 300 * 8
    # The batch fits the card by the planner's memory model (every encoder weight
    # training, under AMP), checkpointed where plain leaves room for fewer than 8.
    plain, checkpointed = (
        step_cost(spec, input_size, "trained", hardware, checkpointing, True)
        for checkpointing in (False, True)
    )
    usable = 0.6 * hardware.gpu_memory_gb * 1024  # the planner's share of a GPU
    plain_fits, checkpointed_fits = (
        int(usable // cost.memory_mb_per_slice) for cost in (plain, checkpointed)
    )
    assert planned.gradient_checkpointing == (
        plain_fits < 8 and checkpointed_fits > plain_fits
    )
    cost = checkpointed if planned.gradient_checkpointing else plain
    assert 1 <= budget.batch_size <= 32
    assert budget.batch_size * cost.memory_mb_per_slice <= usable
    # The user's batch alone changes the steps, not the slices.
    batch_given = pretrain_plan(
        PretrainOptions(steps=None, batch_size=2), spec, input_size, hardware
    )
    assert batch_given.budget.steps == math.ceil(slices / 2)


def test_the_gpu_compute_budget_buys_fewer_slices_of_larger_encoders() -> None:
    """60 PFLOP of training: capped for LiteMedSAM, 20,574 slices of ViT-B at 1024 px,
    and never below the CPU default's 2,400."""
    slices = {
        (name, size): gpu_pretrain_slices(get_backbone(name), size)
        for name, size in [
            ("lite_medsam", 128),
            ("lite_medsam", 256),
            ("sam_vit_b", 1024),
            ("sam_vit_h", 1024),
            ("sam_vit_h", 2048),
        ]
    }
    assert slices == {
        ("lite_medsam", 128): 100_000,
        ("lite_medsam", 256): 100_000,
        ("sam_vit_b", 1024): 20_574,
        ("sam_vit_h", 1024): 3_355,
        ("sam_vit_h", 2048): 2_400,
    }
    assert pretrain_hardware(torch.device("cpu")) is None


def test_samnet_pretrain_leaves_the_budget_to_the_device_unless_given() -> None:
    default = pretrain_arguments(["Dataset004_Hippocampus"])
    assert (default.steps, default.batch_size) == (None, None)
    given = pretrain_arguments(["4", "--steps", "30", "--batch-size", "2"])
    assert (given.steps, given.batch_size) == (30, 2)


def test_a_checkpointed_encoder_pretrains_to_the_same_losses(tmp_path: Path) -> None:
    """What the CUDA default plans for encoders that do not fit: recomputed blocks."""
    budget = PretrainBudget(steps=3, batch_size=2, learning_rate=1e-3)

    def batches(seed: int):
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield torch.rand(2, 1, SIZE, SIZE, generator=generator)

    losses = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = masked_model()
        if checkpointing:
            checkpoint_encoder_blocks(model.image_encoder)
        state = tmp_path / f"{checkpointing}.pth"
        losses[checkpointing] = pretrain(
            model, batches, budget, state, torch.device("cpu")
        )
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
