"""Shared fixtures: private nnU-Net folders per test, and the real data beside the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    TINY_BUDGET,
    TRAINED_DEMO,
    TRAINED_DEMO_ID,
    VOLUME,
    demo_environment,
    run_module,
)


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """nnUNet_raw/preprocessed/results under ``tmp_path``, set in the environment."""
    folders = {}
    for variable, sub in (
        ("nnUNet_raw", "raw"),
        ("nnUNet_preprocessed", "preprocessed"),
        ("nnUNet_results", "results"),
    ):
        folders[variable] = tmp_path / sub
        folders[variable].mkdir()
        monkeypatch.setenv(variable, str(folders[variable]))
    return folders


@pytest.fixture(scope="session")
def trained_demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, str], Path, subprocess.CompletedProcess]:
    """The demo dataset (10 training, 2 test images) through ``samnet_plan_and_train``
    once: SAM and nnU-Net 2d, fold 0, 2 epochs of 2 steps, then the report.

    Returns the environment, the dataset's results folder and the run. Tests that add
    folds or files keep to folds and folders of their own.
    """
    root = tmp_path_factory.mktemp("e2e")
    environment = demo_environment(root, TRAINED_DEMO_ID, num_training=10, num_test=2)
    run = run_module(
        environment, "samnet.cli.plan_and_train", str(TRAINED_DEMO_ID), *TINY_BUDGET,
        timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return environment, root / "results" / TRAINED_DEMO, run


@pytest.fixture
def preprocessed(tmp_path: Path) -> Path:
    """Five cases ``C x Z x H x W`` cropped from 8 slices (starting at slice 2): class 1 in
    slices 1-3, class 2 in slices 2-4, each at a case-dependent place."""
    # nnunetv2 reads nnUNet_* at import: imported only once the test has set them
    from nnunetv2.training.dataloading.nnunet_dataset import (
        comp_blosc2_params,
        nnUNetDatasetBlosc2,
    )

    folder = tmp_path / "nnUNetPlans_2d"
    folder.mkdir()
    for number in range(5):
        rng = np.random.default_rng(number)
        data = rng.normal(size=VOLUME).astype(np.float32)
        seg = np.zeros((1, *VOLUME[1:]), dtype=np.int8)
        seg[0, 1:4, 5 + number : 15 + number, 5:15] = 1
        seg[0, 2:5, 18:28, 20 + number : 30 + number] = 2
        seg[0, :, :, :2] = -1
        properties = {
            "shape_before_cropping": (8, 32, 40),
            "bbox_used_for_cropping": [[2, 8], [0, 32], [0, 40]],
        }
        blocks, chunks = comp_blosc2_params(data.shape, (32, 32))
        nnUNetDatasetBlosc2.save_case(
            data,
            seg,
            properties,
            str(folder / f"case{number}"),
            chunks=chunks,
            blocks=blocks,
        )
    return folder
