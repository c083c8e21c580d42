"""Which budget each method of samnet_plan_and_train gets, from plans written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samnet.cli.plan_and_train import options_from, parse_arguments
from samnet.core.datasets import Dataset
from samnet.core.errors import SamnetError
from samnet.core.methods import Method
from samnet.pipeline.options import BudgetOptions
from samnet.pipeline.plan_and_train import (
    budget_for,
    reference_2d,
    support_baselines,
)

DATASET = Dataset(321, "Dataset321_Budget")
TWO_D = Method("nnUNetTrainer", "nnUNetPlans", "2d")
THREE_D = Method("nnUNetTrainer", "nnUNetPlans", "3d_fullres")
LOWRES = Method("nnUNetTrainer", "samnetPlans", "2d_lowres")


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
    return folder


def asked(*arguments: str) -> BudgetOptions:
    """The budget samnet_plan_and_train's command line asks for."""
    return options_from(parse_arguments([DATASET.name, *arguments])).budget


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
