"""Each kind of method is named by what it is; nnU-Net's identifier is what reproduces it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samnet.core.methods import Method
from samnet.evaluation.names import method_title, read_sam_block, result_titles


def sam_block(**changes) -> dict:
    """A plan's sam block as SAMPlanner writes it (the fields the title reads)."""
    block = {
        "backbone": "lite_medsam",
        "encoder_mode": "cached",
        "peft": {"method": "full", "parts": ["decoder"], "full_parts": []},
        "pretrain": False,
        "few_shot": None,
        "prompts": None,
    }
    return block | changes


@pytest.mark.parametrize(
    ("folder", "sam", "title"),
    [
        (
            "nnUNetTrainerSAMCached__samnetPlans__sam_2d",
            sam_block(),
            "SAM (LiteMedSAM, frozen encoder, decoder trained)",
        ),
        (
            "nnUNetTrainerSAMCached__samnetPlans__sam_2d",
            sam_block(image_branch=True),
            (
                "SAM (LiteMedSAM, frozen encoder, decoder trained, full-resolution "
                "image branch)"
            ),
        ),
        (
            "nnUNetTrainerSAM__samnetPlans__sam_2d",
            sam_block(
                encoder_mode="trained",
                peft={"method": "lora", "parts": ["encoder", "decoder"]},
            ),
            "SAM (LiteMedSAM, LoRA in encoder and decoder)",
        ),
        (
            "nnUNetTrainerSAMCached__samnetPlans__sam_2d",
            sam_block(
                backbone="mobile_sam",
                encoder_mode="prefix_cached",
                pretrain=True,
                peft={
                    "method": "adapter",
                    "parts": ["encoder"],
                    "full_parts": ["decoder"],
                },
            ),
            (
                "SAM (MobileSAM, encoder pre-trained on the dataset, leading encoder "
                "stages frozen and cached, adapters in encoder, decoder trained)"
            ),
        ),
        (
            "nnUNetTrainerSAMFewShot__samnetPlans__sam_2d",
            sam_block(few_shot={"shots": 5, "seed": 0}),
            "SAM few-shot (LiteMedSAM, 5 support slices)",
        ),
        (
            "nnUNetTrainerSAMPrompted__samnetPlans__sam_2d",
            sam_block(prompts=["box", "point"]),
            (
                "SAM prompted (LiteMedSAM, frozen encoder, decoder trained; box and "
                "point prompts)"
            ),
        ),
        ("nnUNetTrainer__nnUNetPlans__2d", None, "nnU-Net 2d"),
        ("nnUNetTrainer__nnUNetPlans__3d_fullres", None, "nnU-Net 3d_fullres"),
        ("nnUNetTrainer__samnetPlans__2d_lowres", None, "nnU-Net 2d at SAM's spacing"),
        ("nnUNetTrainer__nnUNetResEncUNetMPlans__2d", None, "nnU-Net ResEnc M 2d"),
        (
            "nnUNetTrainerSupportSlices__samnetPlans__2d",
            sam_block(few_shot={"shots": 5, "seed": 0}),
            "nnU-Net 2d on 5 support slices",
        ),
        (
            "nnUNetTrainerSupportSlices10x__samnetPlans__2d",
            sam_block(few_shot={"shots": 5, "seed": 0}),
            "nnU-Net 2d on 50 support slices",
        ),
        (
            "nnUNetTrainer_250epochs__nnUNetPlans__2d",
            None,
            "nnU-Net 2d (nnUNetTrainer_250epochs)",
        ),
        ("nnUNetTrainer__myPlans__2d", None, "nnU-Net 2d (plans myPlans)"),
    ],
)
def test_each_kind_of_method_is_named_by_what_it_is(
    folder: str, sam: dict | None, title: str
) -> None:
    assert method_title(Method.from_folder_name(folder), sam) == title


@pytest.mark.parametrize(
    ("folder", "title"),
    [
        ("nnUNetTrainerSAMCached__samnetPlans__sam_2d", "SAM (cached encoder)"),
        ("nnUNetTrainerSAM__samnetPlans__sam_2d", "SAM"),
        (
            "nnUNetTrainerSupportSlices10x__samnetPlans__2d",
            "nnU-Net 2d on 10x the few-shot support slices",
        ),
    ],
)
def test_without_the_plan_a_method_is_named_from_its_identifier(
    folder: str, title: str
) -> None:
    assert method_title(Method.from_folder_name(folder), None) == title


def test_the_sam_block_comes_from_the_plans_in_the_model_folder(tmp_path: Path) -> None:
    plans = {"configurations": {"sam_2d": {"sam": sam_block()}, "2d": {}}}
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    sam = Method.from_folder_name("nnUNetTrainerSAMCached__samnetPlans__sam_2d")
    support = Method.from_folder_name("nnUNetTrainerSupportSlices__samnetPlans__2d")
    baseline = Method.from_folder_name("nnUNetTrainer__samnetPlans__2d")
    assert read_sam_block(tmp_path, sam) == sam_block()
    # nnU-Net on support slices trains on the K of the plan's few-shot sam_2d.
    assert read_sam_block(tmp_path, support) == sam_block()
    assert read_sam_block(tmp_path, baseline) is None
    assert read_sam_block(tmp_path / "absent", sam) is None


def test_a_report_names_stored_titles_old_methods_and_ensembles() -> None:
    sam, baseline = (
        "nnUNetTrainerSAMCached__samnetPlans__sam_2d",
        "nnUNetTrainer__nnUNetPlans__3d_fullres",
    )
    methods = {sam: {"title": "SAM (LiteMedSAM, frozen encoder, decoder trained)"}}
    # A method of a report.json made before titles were stored.
    methods[baseline] = {}
    ensembles = {f"{sam}+{baseline}": {"members": [sam, baseline]}}
    assert result_titles(methods, ensembles) == {
        sam: "SAM (LiteMedSAM, frozen encoder, decoder trained)",
        baseline: "nnU-Net 3d_fullres",
        f"{sam}+{baseline}": "SAM (LiteMedSAM, frozen encoder, decoder trained) "
        "+ nnU-Net 3d_fullres",
    }
