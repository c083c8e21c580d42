"""2d_lowres: nnU-Net's 2d U-Net at SAM's in-plane spacing, planned and trained next to SAM.

A synthetic 2D X-ray-like dataset whose slices (320 px) exceed LiteMedSAM's 256 px input
with structures large enough to be coarsened, so the SAM plan downsamples them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_module, subprocess_environment
from PIL import Image

from samnet.preprocessing.intake.convert_2d import convert_2d

DATASET_ID = 993
NAME = "Dataset993_LargeSlices"
LOWRES = "nnUNetTrainer__samnetPlans__2d_lowres"
# 10 labelled images are at most 25 slices: the planner puts SAM in few-shot mode.
SAM = "nnUNetTrainerSAMFewShot__samnetPlans__sam_2d"
TINY_BUDGET = ["--folds", "0", "--epochs", "1", "--iterations-per-epoch", "2"]
TINY_BUDGET += ["--val-iterations-per-epoch", "1", "--batch-size", "2"]
TINY_BUDGET += ["--device", "cpu"]

pytestmark = pytest.mark.slow


def write_large_slices(root: Path, cases: int) -> tuple[Path, Path]:
    """PNG images of 320 x 320 px with two bright blocks of about 120 x 100 px (labels 1, 2)."""
    rng = np.random.default_rng(3)
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(cases):
        mask = np.zeros((320, 320), np.uint8)
        top, left = rng.integers(30, 70, 2)
        mask[top : top + 120, left : left + 100] = 1
        mask[top : top + 120, left + 140 : left + 240] = 2
        image = rng.normal(60, 10, mask.shape) + 90.0 * (mask > 0)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
            images / f"xray{index}.png"
        )
        Image.fromarray(mask).save(masks / f"xray{index}.png")
    return images, masks


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The dataset planned and trained: SAM and the 2d_lowres baseline, fold 0, 2 steps."""
    root = tmp_path_factory.mktemp("lowres")
    environment = subprocess_environment(
        root,
        lambda: convert_2d(
            *write_large_slices(root, cases=10),
            "LargeSlices",
            DATASET_ID,
            modality="X-ray",
        ),
    )
    run = run_module(
        environment,
        "samnet.cli.plan_and_train",
        str(DATASET_ID),
        "--configurations",
        "2d_lowres",
        *TINY_BUDGET,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root / "preprocessed" / NAME, root / "results" / NAME


def test_lowres_is_nnunets_unet_on_sams_data(trained) -> None:
    preprocessed, _ = trained
    configurations = json.loads((preprocessed / "samnetPlans.json").read_text())[
        "configurations"
    ]
    sam, lowres, native = (configurations[c] for c in ("sam_2d", "2d_lowres", "2d"))
    assert sam["spacing"][0] > native["spacing"][0]
    assert lowres["spacing"] == sam["spacing"]
    assert lowres["data_identifier"] == sam["data_identifier"]
    assert lowres["architecture"] != sam["architecture"]
    assert (
        lowres["architecture"]["network_class_name"]
        == (native["architecture"]["network_class_name"])
    )
    assert max(lowres["patch_size"]) <= max(sam["median_image_size_in_voxels"])


def test_lowres_baseline_trains_with_sams_budget(trained) -> None:
    _, results = trained
    budgets = [
        json.loads((results / method / "fold_0" / "samnet_budget.json").read_text())
        for method in (LOWRES, SAM)
    ]
    assert budgets[0] == budgets[1]
    for method in (LOWRES, SAM):
        assert (results / method / "fold_0" / "validation" / "summary.json").is_file()
    report = json.loads((results / "samnet_report" / "report.json").read_text())
    assert set(report["methods"]) >= {LOWRES, SAM}
