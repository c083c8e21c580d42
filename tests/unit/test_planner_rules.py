"""The SAM planning rules on hand-made fingerprints of very different datasets and machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import (
    CHEST_XRAY,
    LAPTOP,
    REPO,
    classes,
    decision,
    fingerprint,
    plan,
)

from samnet.core.errors import SamnetError
from samnet.core.sam_plan import SamPlan
from samnet.planners.evidence import (
    CACHED_VIEWS_MEASURED,
    IMAGE_BRANCH_MEASURED,
    user_reason,
)
from samnet.planners.explain import decision_rows, describe_fingerprint, describe_peft
from samnet.planners.hardware import Hardware
from samnet.planners.modality import detect_modality
from samnet.planners.planner import Planner

H100 = Hardware("cuda", 16, 128.0, "NVIDIA H100 80GB HBM3", 80.0, 50000.0)


ABDOMINAL_CT = fingerprint(
    channel_names=("CT",),
    modality="CT",
    median_spacing=(5.0, 0.8, 0.8),
    median_shape=(90, 512, 512),
    anisotropy=6.25,
    labelled_cases=30,
    classes=classes(180, 150, 120, 100, 80, 60, 50, 45, 40, 30, 25, 20, 18),
)
BRAIN_MRI = fingerprint(
    channels=4,
    channel_names=("FLAIR", "T1w", "T1gd", "T2w"),
    median_spacing=(1.0, 1.0, 1.0),
    median_shape=(140, 170, 140),
    labelled_cases=484,
    classes=classes(60, 40, 25),
)
ENDOSCOPY_RGB = fingerprint(
    dimensions=2,
    channels=3,
    channel_names=("R", "G", "B"),
    modality="RGB",
    median_spacing=(999.0, 1.0, 1.0),
    median_shape=(1, 576, 720),
    labelled_cases=1000,
    classes=classes(150),
)


@pytest.mark.parametrize(
    "fp", [ABDOMINAL_CT, BRAIN_MRI, CHEST_XRAY, ENDOSCOPY_RGB], ids=lambda f: f.modality
)
@pytest.mark.parametrize("hardware", [LAPTOP, H100], ids=["cpu", "h100"])
def test_every_plan_is_complete_and_survives_json(fp, hardware) -> None:
    result = plan(fp, hardware)
    data = json.loads(json.dumps(result.sam.to_dict()))
    assert SamPlan.from_dict(data).to_dict() == data
    decided = {d["what"] for d in data["decisions"]}
    for what in (
        "backbone",
        "input_size",
        "slicing_axis",
        "patch_size",
        "in_plane_spacing",
        "intensity_mapping",
        "encoder_mode",
        "peft",
        "gradient_checkpointing",
        "batch_size",
        "learning_rate",
        "epochs",
    ):
        assert what in decided
    assert all(d["because"] for d in data["decisions"])
    assert result.patch_size[0] == result.patch_size[1] <= result.sam.input_size
    # On CPU at most the baselines' cap; on a GPU what fits (test_gpu_planning.py).
    assert result.batch_size >= 1
    assert hardware.on_gpu or result.batch_size <= 32
    assert result.batch_size == result.sam.budget.batch_size


def test_cpu_and_gpu_plans_differ_for_the_same_dataset() -> None:
    laptop, gpu = plan(BRAIN_MRI, LAPTOP), plan(BRAIN_MRI, H100)
    assert laptop.sam.encoder_mode == "cached"
    assert gpu.sam.encoder_mode == "trained"
    assert laptop.sam.peft["parts"] == ["decoder"]
    # Gu et al.: PEFT in encoder and decoder where the machine affords it
    assert gpu.sam.peft["method"] == "lora"
    assert gpu.sam.peft["parts"] == ["encoder", "decoder"]
    assert (gpu.sam.budget.epochs, gpu.sam.budget.iterations_per_epoch) == (1000, 250)
    assert (laptop.sam.budget.epochs, laptop.sam.budget.iterations_per_epoch) == (
        20,
        50,
    )


def test_anisotropic_ct_slices_along_the_thick_axis_and_keeps_small_organs() -> None:
    result = plan(ABDOMINAL_CT, H100)
    assert result.sam.slicing_axis == 0
    assert "5 mm" in decision(result, "slicing_axis")["because"]
    # The whole 512 px slice would fit 256 px at 2x, but the 18 mm organ must keep 4
    # embedding cells (16 px at LiteMedSAM's stride 4): only 22.5 / 16 = 1.41x coarser.
    assert result.downsampling == pytest.approx(18 / 0.8 / 16)
    assert result.sam.in_plane_spacing == pytest.approx((0.8 * 22.5 / 16,) * 2)
    assert result.patch_size == (256, 256)
    assert "CT" in decision(result, "intensity_mapping")["because"]


def test_large_chest_xrays_are_coarsened_to_the_encoder_input() -> None:
    result = plan(CHEST_XRAY)
    assert result.downsampling == pytest.approx(1024 / 256)
    assert result.sam.in_plane_spacing == pytest.approx((4.0, 4.0))
    assert result.patch_size == (256, 256)
    # nnU-Net's dummy axis of 2D images is not shown.
    assert "spacing 1 x 1 mm, median shape 1024 x 1024" in describe_fingerprint(
        CHEST_XRAY
    )


def test_cached_plans_keep_the_encoder_input_fixed_and_cpu_plans_skip_mirroring() -> (
    None
):
    """A trained input adapter would change what the cache holds."""
    cpu, gpu = plan(BRAIN_MRI), plan(fingerprint(labelled_cases=1000), H100)
    assert cpu.sam.encoder_mode == "cached" and not cpu.sam.test_time_mirroring
    assert cpu.sam.peft["trainable_extra"] == ["class_head"]
    assert gpu.sam.encoder_mode == "trained" and gpu.sam.test_time_mirroring
    assert "input_adapter" in gpu.sam.peft["trainable_extra"]


def test_small_slices_on_cpu_use_a_small_input_and_native_spacing() -> None:
    result = plan(fingerprint())
    assert result.sam.input_size == 128
    assert result.downsampling == 1.0
    assert result.patch_size == (56, 56)
    assert plan(fingerprint(), H100).sam.input_size == 256


def test_four_mri_channels_and_rgb_are_planned_with_their_normalisation() -> None:
    for fp in (BRAIN_MRI, ENDOSCOPY_RGB):
        result = plan(fp)
        assert result.sam.intensity_mapping == "unit_range"
        assert result.sam.backbone == "lite_medsam"


def test_five_labelled_cases_freeze_and_cache_the_encoder_even_on_a_gpu() -> None:
    result = plan(fingerprint(labelled_cases=5), H100)
    assert result.sam.encoder_mode == "cached"
    assert "Xie et al." in decision(result, "encoder_mode")["because"]


def test_a_thousand_cases_on_a_gpu_train_lora_in_the_encoder() -> None:
    result = plan(ENDOSCOPY_RGB, H100)
    assert result.sam.encoder_mode == "trained"
    assert result.sam.peft["encoder_blocks"] is None


def test_a_tight_time_allowance_on_a_gpu_first_shrinks_the_batch() -> None:
    roomy, tight = plan(BRAIN_MRI, H100), plan(BRAIN_MRI, H100, max_hours=6.0)
    assert roomy.sam.encoder_mode == tight.sam.encoder_mode == "trained"
    assert 2 <= tight.batch_size < roomy.batch_size
    assert (
        f"trained 5.8 h (batch {tight.batch_size})"
        in (decision(tight, "encoder_mode")["because"])
    )


def test_too_tight_for_the_trained_encoder_caches_its_early_stages() -> None:
    # The trained encoder at nnU-Net's minimum batch of 2 would take 0.5 h.
    result = plan(BRAIN_MRI, H100, max_hours=0.4)
    assert result.sam.encoder_mode == "prefix_cached"
    assert result.sam.peft["encoder_blocks"] == [-2, -1]


def test_overrides_replace_decisions_and_are_recorded_as_the_reason() -> None:
    result = plan(fingerprint(), input_size=256, peft="lora", lora_rank=8, batch_size=4)
    assert result.sam.input_size == 256
    assert result.sam.peft["lora_rank"] == 8
    assert result.sam.encoder_mode in ("trained", "prefix_cached")
    assert result.batch_size == 4
    for what in ("input_size", "batch_size", "peft"):
        assert "set by the user" in decision(result, what)["because"]


def test_contradicting_overrides_are_a_clear_error() -> None:
    with pytest.raises(SamnetError, match="cannot train --peft lora"):
        plan(fingerprint(), peft="lora", encoder_mode="cached")


@pytest.mark.parametrize(
    ("names", "minimum", "dimensions", "expected"),
    [
        (("CT",), -1024.0, 3, "CT"),
        (("0000",), -1024.0, 3, "CT"),  # named oddly: recognised from HU
        (("T1Gd",), 0.0, 3, "MRI"),
        (("image",), 0.0, 3, "MRI"),
        (("R", "G", "B"), 0.0, 2, "RGB"),
        (("a", "b", "c"), 0.0, 2, "RGB"),
        (("gray",), 0.0, 2, "X-ray"),
    ],
)
def test_modality_from_names_and_intensities(
    names, minimum, dimensions, expected
) -> None:
    intensities = {str(i): {"min": minimum, "max": 255.0} for i in range(len(names))}
    assert detect_modality(names, intensities, dimensions)[0] == expected


def test_explanation_rows_wrap_long_reasons_under_their_decision() -> None:
    result = plan(ABDOMINAL_CT, H100)
    rows = decision_rows(decision(result, "encoder_mode"))
    assert rows[0].split()[:2] == ["encoder_mode", "trained"]
    assert len(rows) > 1 and all(not row[:22].strip() for row in rows[1:])
    assert describe_peft(result.sam.peft) == "LoRA r4 encoder+decoder"


def test_planner_fine_tunes_samnet_pretrain_weights_when_the_dataset_has_them() -> None:
    weights = Path("/results/Dataset001/samnet_pretrain/lite_medsam_pretrained.pth")
    found = {"lite_medsam": weights}
    result = Planner(BRAIN_MRI, LAPTOP, {}, found).plan()
    assert result.sam.checkpoint == str(weights)
    assert "samnet_pretrain" in decision(result, "checkpoint")["because"]
    assert plan(BRAIN_MRI).sam.checkpoint is None
    other_backbone = Planner(BRAIN_MRI, LAPTOP, {}, {"mobile_sam": weights}).plan()
    assert other_backbone.sam.checkpoint is None
    chosen = Planner(BRAIN_MRI, LAPTOP, {"checkpoint": "/mine.pth"}, found).plan()
    assert chosen.sam.checkpoint == "/mine.pth"


def test_pretraining_is_planned_only_when_asked_and_not_done() -> None:
    assert decision(plan(BRAIN_MRI), "pretrain")["value"] is False
    asked = plan(BRAIN_MRI, pretrain=True)
    assert decision(asked, "pretrain") == {
        "what": "pretrain",
        "value": True,
        "because": user_reason("pretrain"),
    }
    assert asked.sam.pretrain is True
    weights = {
        "lite_medsam": Path("/results/samnet_pretrain/lite_medsam_pretrained.pth")
    }
    done = Planner(BRAIN_MRI, LAPTOP, {}, weights).plan()
    assert decision(done, "pretrain")["value"] is False
    assert done.sam.pretrain is False
    assert (
        decision(plan(BRAIN_MRI, checkpoint="/mine.pth"), "pretrain")["value"] is False
    )
    with pytest.raises(SamnetError, match="pre-trained weights would go unused"):
        plan(BRAIN_MRI, checkpoint="/mine.pth", pretrain=True)


def test_the_image_branch_is_off_as_measured_until_asked_and_then_trains() -> None:
    default = plan(BRAIN_MRI)
    assert default.sam.image_branch is False
    reason = decision(default, "image_branch")["because"]
    assert "did not pay" in reason and "sam_ablation_cxr_cpu.json" in reason
    assert "image_branch" not in default.sam.peft["trainable_extra"]
    asked = plan(BRAIN_MRI, image_branch=True)
    assert decision(asked, "image_branch") == {
        "what": "image_branch",
        "value": True,
        "because": user_reason("image_branch"),
    }
    assert asked.sam.peft["trainable_extra"] == ["class_head", "image_branch"]
    on_gpu = plan(BRAIN_MRI, H100, image_branch=True)
    assert on_gpu.sam.encoder_mode == "trained"
    assert on_gpu.sam.peft["trainable_extra"][-1] == "image_branch"
    data = json.loads(json.dumps(asked.sam.to_dict()))
    assert SamPlan.from_dict(data).to_dict() == data and data["image_branch"] is True
    del data["image_branch"]  # a plan made before the field
    assert SamPlan.from_dict(data).image_branch is False


@pytest.mark.parametrize(
    ("overrides", "option"),
    [({"few_shot": 5}, "--few-shot/--support"), ({"prompts": "box"}, "--prompts")],
)
def test_the_image_branch_is_refused_with_few_shot_mode_and_prompts(
    overrides, option
) -> None:
    with pytest.raises(
        SamnetError, match="to the prompt-free class head, which"
    ) as error:
        plan(fingerprint(), image_branch=True, **overrides)
    assert error.value.fix == f"drop --image-branch yes, or drop {option}"
    assert plan(fingerprint(), **overrides).sam.image_branch is False


def test_the_planners_measured_reasons_quote_the_ablation_json() -> None:
    # The reasons a plan gives for leaving an ablation arm out are what its JSON says.
    arms = json.loads(
        (REPO / "benchmarks/results/sam_ablation_cxr_cpu.json").read_text()
    )["arms"]
    plan_dice = f"{arms['plan']['dice_mean_foreground']:.3f}"
    for arm, quoted in (
        ("image_branch", IMAGE_BRANCH_MEASURED),
        ("cached_views", CACHED_VIEWS_MEASURED),
    ):
        measured = arms[arm]
        assert f"{measured['dice_mean_foreground']:.3f}" in quoted
        assert f"{plan_dice} without" in quoted
        cases = measured["minus_plan"]["cases"]
        better = measured["minus_plan"]["cases_better"]
        assert (f"{better} of {cases}" in quoted) or (
            better == 0 and f"lower on all {cases}" in quoted
        )
    assert f"{arms['cached_views']['embedding_cache']['seconds']:.0f} s" in (
        CACHED_VIEWS_MEASURED
    )
