"""Which budget each method of samnet_plan_and_train gets, from plans written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samnet.cli.plan_and_train import options_from, parse_arguments
from samnet.core.datasets import Dataset
from samnet.core.errors import SamnetError
from samnet.core.methods import Method
from samnet.pipeline.options import BudgetOptions, PlanAndTrainOptions
from samnet.pipeline.plan_and_train import (
    budget_for,
    fold_runs,
    reference_2d,
    support_baselines,
)

DATASET = Dataset(321, "Dataset321_Budget")
TWO_D = Method("nnUNetTrainer", "nnUNetPlans", "2d")
THREE_D = Method("nnUNetTrainer", "nnUNetPlans", "3d_fullres")
LOWRES = Method("nnUNetTrainer", "samnetPlans", "2d_lowres")
RESENC_2D = Method("nnUNetTrainer", "nnUNetResEncUNetMPlans", "2d")
RESENC_3D = Method("nnUNetTrainer", "nnUNetResEncUNetMPlans", "3d_fullres")
SAM = Method("nnUNetTrainerSAMCached", "samnetPlans", "sam_2d")
SAM_BATCH = 48
WITH_LOWRES = ("--configurations", "2d", "3d_fullres", "2d_lowres")


@pytest.fixture
def plans(nnunet_folders: dict[str, Path]) -> Path:
    folder = nnunet_folders["nnUNet_preprocessed"] / DATASET.name
    folder.mkdir()
    configurations = {
        "2d": {"patch_size": [56, 40], "batch_size": 292},
        "3d_fullres": {"patch_size": [40, 56, 40], "batch_size": 7},
    }
    (folder / "nnUNetPlans.json").write_text(
        json.dumps({"configurations": configurations})
    )
    # nnUNetPlannerResEncM's batch sizes on Hippocampus: it may cover the whole dataset.
    resenc = {
        "2d": {"patch_size": [56, 40], "batch_size": 1618},
        "3d_fullres": {"patch_size": [40, 56, 40], "batch_size": 58},
    }
    (folder / "nnUNetResEncUNetMPlans.json").write_text(
        json.dumps({"configurations": resenc})
    )
    # The SAM planner's memory-model batch, in its sam block's budget and as nnU-Net's
    # batch_size; 2d_lowres: nnU-Net's 2d U-Net planned at SAM's spacing.
    budget = {"epochs": 1000, "iterations_per_epoch": 250, "batch_size": SAM_BATCH}
    sam_block = {
        "encoder_mode": "cached",
        "few_shot": None,
        "prompts": None,
        "budget": budget,
    }
    sam = {
        "sam_2d": {"patch_size": [256, 256], "batch_size": SAM_BATCH, "sam": sam_block},
        "2d_lowres": {"patch_size": [40, 28], "batch_size": 545},
    }
    (folder / "samnetPlans.json").write_text(json.dumps({"configurations": sam}))
    return folder


def options(*arguments: str) -> PlanAndTrainOptions:
    """What samnet_plan_and_train's command line asks for."""
    return options_from(parse_arguments([DATASET.name, *arguments]))


def asked(*arguments: str) -> BudgetOptions:
    """The budget samnet_plan_and_train's command line asks for."""
    return options(*arguments).budget


def budgets(asked_for: PlanAndTrainOptions, plans: Path, on_cpu: bool) -> dict:
    """The budget of each method fold_runs trains on fold 0, by method, in its order."""
    preprocessed = {p: ["2d", "3d_fullres"] for p in asked_for.baseline_plans}
    runs = fold_runs(
        DATASET, asked_for, preprocessed, plans / "samnetPlans.json", on_cpu
    )
    return {run.method: run.budget for run in runs if run.fold == 0}


def test_cpu_defaults_cap_the_batch_per_dimensionality(plans: Path) -> None:
    args = asked()
    assert budget_for(TWO_D, DATASET, args, on_cpu=True).batch_size == 32
    assert budget_for(THREE_D, DATASET, args, on_cpu=True).batch_size == 2
    on_gpu = budget_for(THREE_D, DATASET, args, on_cpu=False)
    assert (on_gpu.batch_size, on_gpu.epochs, on_gpu.iterations_per_epoch) == (
        7,
        1000,
        250,
    )


def test_batch_size_options_apply_to_their_dimensionality(plans: Path) -> None:
    args = asked("--batch-size", "16", "--batch-size-3d", "3")
    assert budget_for(TWO_D, DATASET, args, on_cpu=True).batch_size == 16
    assert budget_for(THREE_D, DATASET, args, on_cpu=True).batch_size == 3
    only_2d = asked("--batch-size", "16")
    assert budget_for(THREE_D, DATASET, only_2d, on_cpu=True).batch_size == 2


def test_sam_follows_the_first_2d_baseline_trained() -> None:
    assert reference_2d([THREE_D, TWO_D, LOWRES], "nnUNetPlans") == TWO_D
    assert reference_2d([THREE_D, LOWRES], "nnUNetPlans") == LOWRES
    assert reference_2d([THREE_D], "nnUNetPlans") == TWO_D
    assert reference_2d([], "nnUNetPlans") == TWO_D


def test_support_baselines_only_with_a_few_shot_plan() -> None:
    methods = support_baselines(Path("samnetPlans.json"), True, "2d_lowres")
    assert [m.folder_name for m in methods] == [
        "nnUNetTrainerSupportSlices__samnetPlans__2d_lowres",
        "nnUNetTrainerSupportSlices10x__samnetPlans__2d_lowres",
    ]
    with pytest.raises(SamnetError, match="not few-shot"):
        support_baselines(Path("samnetPlans.json"), False, "2d")


def test_baselines_are_nnunets_default_plans_unless_asked() -> None:
    assert options().baselines == ("default",)
    assert options().baseline_plans == ("nnUNetPlans",)
    # Given in any order, nnU-Net's default plans come first.
    both = options("--baselines", "resenc_m", "default")
    assert both.baseline_plans == ("nnUNetPlans", "nnUNetResEncUNetMPlans")
    assert options("--baselines", "resenc_m").baseline_plans == (
        "nnUNetResEncUNetMPlans",
    )
    with pytest.raises(SystemExit):
        options("--baselines", "resenc_xxl")
    with pytest.raises(SamnetError, match="choose from default, resenc_m"):
        PlanAndTrainOptions(baselines=())


def test_default_run_trains_what_it_always_did(plans: Path) -> None:
    assert list(budgets(options(), plans, on_cpu=True)) == [SAM, TWO_D, THREE_D]


def test_resenc_trains_every_configuration_with_the_budget_rules_of_the_others(
    plans: Path,
) -> None:
    # On a GPU each trains its own plans' batch (292 and 1618 in 2d, 7 and 58 in 3d).
    chosen = budgets(options("--baselines", "default", "resenc_m"), plans, False)
    assert list(chosen) == [SAM, TWO_D, THREE_D, RESENC_2D, RESENC_3D]
    assert (chosen[RESENC_2D].batch_size, chosen[TWO_D].batch_size) == (1618, 292)
    assert (chosen[RESENC_3D].batch_size, chosen[THREE_D].batch_size) == (58, 7)
    assert len({budget.optimizer_steps for budget in chosen.values()}) == 1
    on_cpu = budgets(options("--baselines", "default", "resenc_m"), plans, True)
    assert on_cpu[RESENC_2D] == on_cpu[SAM] and on_cpu[RESENC_2D].batch_size == 32
    assert on_cpu[RESENC_3D] == on_cpu[THREE_D] and on_cpu[RESENC_3D].batch_size == 2


def test_resenc_alone_leaves_sams_budget_as_it_was(plans: Path) -> None:
    for on_cpu in (True, False):
        alone = budgets(options("--baselines", "resenc_m"), plans, on_cpu)
        assert list(alone) == [SAM, RESENC_2D, RESENC_3D]
        assert alone[SAM] == budgets(options(), plans, on_cpu)[SAM]
    assert alone[SAM].batch_size == SAM_BATCH


def test_on_a_gpu_each_method_trains_its_plans_batch_for_the_same_steps(
    plans: Path,
) -> None:
    """SAM the SAM planner's batch (not nnU-Net 2d's 292 slices, about 180 GB for a
    trained LiteMedSAM), each baseline nnU-Net's own plan's; every one 1000 x 250 steps."""
    chosen = budgets(options(*WITH_LOWRES), plans, on_cpu=False)
    assert list(chosen) == [SAM, TWO_D, THREE_D, LOWRES]
    assert [budget.batch_size for budget in chosen.values()] == [SAM_BATCH, 292, 7, 545]
    assert {budget.optimizer_steps for budget in chosen.values()} == {1000 * 250}


def test_on_cpu_sam_and_every_2d_baseline_share_one_capped_batch(plans: Path) -> None:
    chosen = budgets(options(*WITH_LOWRES), plans, on_cpu=True)
    assert chosen[SAM] == chosen[TWO_D] == chosen[LOWRES]
    assert (chosen[SAM].batch_size, chosen[THREE_D].batch_size) == (32, 2)
    assert {budget.optimizer_steps for budget in chosen.values()} == {20 * 50}


def test_the_users_batch_size_replaces_every_planned_2d_batch_on_either_device(
    plans: Path,
) -> None:
    for on_cpu in (True, False):
        chosen = budgets(options("--batch-size", "12"), plans, on_cpu)
        assert (chosen[SAM].batch_size, chosen[TWO_D].batch_size) == (12, 12)
        assert chosen[THREE_D].batch_size == (2 if on_cpu else 7)
