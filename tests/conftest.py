"""Shared fixtures: private nnU-Net folders per test, and the real data beside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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


def shared_dataset(name: str) -> Path:
    """A dataset from ../shared/data, or a clean skip when this checkout has none beside it."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (it sits beside the repository in CI)")
    return path


def subprocess_environment(root: Path, write: Callable[[], object]) -> dict[str, str]:
    """nnU-Net's folders under ``root``, ``write()`` run with them set, and the environment
    for subprocesses that use them (one worker process each).

    ``write`` puts a raw dataset in place in this process; this process's own environment
    is left as it was.
    """
    folders = {
        "nnUNet_raw": root / "raw",
        "nnUNet_preprocessed": root / "preprocessed",
        "nnUNet_results": root / "results",
    }
    environment = dict(os.environ, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1")
    environment.update({variable: str(path) for variable, path in folders.items()})
    with pytest.MonkeyPatch.context() as patch:
        for variable, path in folders.items():
            patch.setenv(variable, str(path))
        write()
    return environment


def demo_environment(
    root: Path, dataset_id: int, num_training: int, num_test: int
) -> dict[str, str]:
    """A demo dataset in ``root/raw`` and the environment for subprocesses that use it."""
    from samnet.preprocessing.demo_dataset import write_demo_dataset

    return subprocess_environment(
        root,
        lambda: write_demo_dataset(
            dataset_id, num_training=num_training, num_test=num_test
        ),
    )


# The end-to-end demo trained once per session (test_plan_and_train, test_predict).
TRAINED_DEMO_ID = 991
TRAINED_DEMO = "Dataset991_SamnetDemo"
TINY_BUDGET = ["--folds", "0", "--configurations", "2d", "--epochs", "2"]
TINY_BUDGET += ["--iterations-per-epoch", "2", "--val-iterations-per-epoch", "1"]
TINY_BUDGET += ["--batch-size", "4", "--device", "cpu"]
# SAM at 64 px: the encoder (embedding cache, validation) is most of an end-to-end run
# on CPU, and a quarter of the pixels of the planned 128 px costs about a quarter.
TINY_BUDGET += ["--input-size", "64"]


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
        environment, "samnet.plan_and_train", str(TRAINED_DEMO_ID), *TINY_BUDGET,
        timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return environment, root / "results" / TRAINED_DEMO, run


def run_module(
    environment: dict[str, str], module: str, *arguments: str, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m module arguments`` as a user runs it, in ``environment``; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        env=environment,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def heavy_imports(modules: list[str], heavy: tuple[str, ...]) -> list[str]:
    """Which of ``heavy`` importing ``modules`` loads, in a fresh interpreter (for ``--help`` speed)."""
    code = (
        f"import sys, {', '.join(modules)}; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    return [name for name in run.stdout.strip().split(",") if name]


# Five preprocessed cases of C x Z x H x W, cropped along Z as nnU-Net crops.
VOLUME = (1, 6, 32, 40)


@pytest.fixture
def preprocessed(tmp_path: Path) -> Path:
    """Five cases ``C x Z x H x W`` cropped from 8 slices (starting at slice 2): class 1 in
    slices 1-3, class 2 in slices 2-4, each at a case-dependent place."""
    import numpy as np
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
