"""Helpers shared by the unit and end-to-end tests: data, fakes and subprocess runs."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from torch import nn

from samnet.core.layout import FINAL_CHECKPOINT, FOLD_STATS_FILE
from samnet.inference.run import Options
from samnet.inference.selection import Member
from samnet.planners.fingerprint import ClassStatistics, SamFingerprint
from samnet.planners.hardware import Hardware
from samnet.planners.planner import Planner, PlanResult
from samnet.preprocessing.intake.demo_dataset import write_demo_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
    return subprocess_environment(
        root,
        lambda: write_demo_dataset(
            dataset_id, num_training=num_training, num_test=num_test
        ),
    )


# The end-to-end demo trained once per session (test_plan_and_train, test_predict).
TRAINED_DEMO_ID = 991
TRAINED_DEMO = "Dataset991_SamnetDemo"


# SAM at 64 px: the encoder (embedding cache, validation) is most of an end-to-end run
# on CPU, and a quarter of the pixels of the planned 128 px costs about a quarter.
TINY_BUDGET = ["--folds", "0", "--configurations", "2d", "--epochs", "2"]
TINY_BUDGET += ["--iterations-per-epoch", "2", "--val-iterations-per-epoch", "1"]
TINY_BUDGET += ["--batch-size", "4", "--device", "cpu", "--input-size", "64"]


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


# A toy SAM for network-level tests.
SIZE = 64


def tiny_sam(size: int = SIZE, patch: int = 8, dim: int = 32, depth: int = 2) -> Sam:
    """A SAM with segment-anything's own modules at toy width: random weights, fast on CPU.
    Its ViT has ``depth`` blocks, the last with global attention (as SAM's stages end)."""
    encoder = ImageEncoderViT(
        img_size=size,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=2,
        out_chans=dim,
        window_size=4,
        global_attn_indexes=(depth - 1,),
        use_rel_pos=True,
    )
    return sam_around(encoder, size, size // patch, dim)


def sam_around(encoder: nn.Module, size: int, grid: int, dim: int) -> Sam:
    """``encoder`` (``size`` px in, a ``grid`` x ``grid`` embedding of ``dim`` channels)
    with SAM's prompt encoder and mask decoder at width ``dim``: random weights."""
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(size, size),
        mask_in_chans=4,
    )
    transformer = TwoWayTransformer(
        depth=2, embedding_dim=dim, mlp_dim=2 * dim, num_heads=2
    )
    decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=transformer,
        iou_head_depth=2,
        iou_head_hidden_dim=dim,
    )
    return Sam(encoder, prompt_encoder, decoder)


# Fingerprints and a planner run on a laptop, for planning tests.
LAPTOP = Hardware("cpu", 2, 24.0, None, None, 250.0)


def classes(*extents_mm: float) -> tuple[ClassStatistics, ...]:
    return tuple(
        ClassStatistics(f"class{i}", 0.01, extent)
        for i, extent in enumerate(extents_mm, start=1)
    )


HIPPOCAMPUS_LIKE = SamFingerprint(
    dimensions=3,
    channels=1,
    channel_names=("MRI",),
    modality="MRI",
    modality_evidence="channel names",
    median_spacing=(1.0, 1.0, 1.0),
    median_shape=(36, 50, 35),
    slicing_axis=0,
    anisotropy=1.0,
    labelled_cases=208,
    unlabelled_cases=52,
    classes=classes(17.0, 13.0),
)


def fingerprint(**changes) -> SamFingerprint:
    """Small isotropic MRI volumes, 208 cases, 2 classes, unless changed."""
    return dataclasses.replace(HIPPOCAMPUS_LIKE, **changes)


CHEST_XRAY = fingerprint(
    dimensions=2,
    channel_names=("X-ray",),
    modality="X-ray",
    median_spacing=(999.0, 1.0, 1.0),
    median_shape=(1, 1024, 1024),
    labelled_cases=98,
    unlabelled_cases=0,
    classes=classes(400, 380),
)


def plan(fp: SamFingerprint, hardware: Hardware = LAPTOP, **overrides) -> PlanResult:
    return Planner(fp, hardware, overrides).plan()


def decision(result: PlanResult, what: str) -> dict:
    return next(d for d in result.sam.to_dict()["decisions"] if d["what"] == what)


# The few-shot support fixture: classes, patch and the fold's cases.
PATCH = (32, 32)


CLASSES = 3


TRAINING = ["case0", "case1", "case2", "case3"]


VALIDATION = ["case4"]


# A trained-looking results folder whose models are fakes, for prediction tests.
PREDICT_DATASET = "Dataset321_PredictFixture"


BASELINE = "nnUNetTrainer__nnUNetPlans__3d_fullres"


LABELS = {"background": 0, "a": 1, "b": 2}


THRESHOLD = 50.0


READERS = {".png": "NaturalImage2DIO"}


def write_model(
    dataset: Path,
    name: str,
    file_ending: str = ".nii.gz",
    channels: tuple[str, ...] = ("MRI",),
    folds: tuple[int, ...] = (0,),
) -> Path:
    """A results folder as nnU-Net leaves it: plans.json, dataset.json, fold_K/checkpoint_final.pth."""
    folder = dataset / name
    for fold in folds:
        (folder / f"fold_{fold}").mkdir(parents=True)
        (folder / f"fold_{fold}" / FINAL_CHECKPOINT).write_bytes(b"")
    plans = {
        "dataset_name": dataset.name,
        "plans_name": name.split("__")[1],
        "image_reader_writer": READERS.get(file_ending, "SimpleITKIO"),
        "label_manager": "LabelManager",
        "configurations": {},
    }
    dataset_json = {
        "channel_names": {str(k): c for k, c in enumerate(channels)},
        "labels": LABELS,
        "file_ending": file_ending,
    }
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    return folder


class FakeModel:
    """Stands in for nnU-Net's predictor: reads and writes with the model's own reader/writer.

    Its probabilities are ``probabilities.npy`` in the model folder when there is one, else
    class 1 where the mean over channels is above ``THRESHOLD``. Records each call.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(
        self,
        member: Member,
        inputs: list[list[str]],
        outputs: list[str],
        save_probabilities: bool,
        options: Options,
    ) -> None:
        # nnunetv2 reads nnUNet_* at import: imported only once the test has set them
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.calls.append((member.folder.name, save_probabilities))
        reader = PlansManager(
            str(member.folder / "plans.json")
        ).image_reader_writer_class()
        ending = json.loads((member.folder / "dataset.json").read_text())["file_ending"]
        stored = member.folder / "probabilities.npy"
        for files, output in zip(inputs, outputs):
            data, properties = reader.read_images(files)
            if stored.exists():
                probabilities = np.load(stored)
            else:
                foreground = data.mean(axis=0) > THRESHOLD
                probabilities = np.stack(
                    [~foreground, foreground, np.zeros_like(foreground)]
                ).astype(np.float32)
            reader.write_seg(probabilities.argmax(0), output + ending, properties)
            if save_probabilities:
                np.savez_compressed(output + ".npz", probabilities=probabilities)
                Path(output + ".pkl").write_bytes(pickle.dumps(properties))


# Validation summaries and model files as nnU-Net writes them, for report tests.
REPORT_DATASET = "Dataset123_Fixture"


def write_dataset_json(raw_root: Path) -> None:
    raw = raw_root / REPORT_DATASET
    raw.mkdir()
    dataset_json = {
        "labels": {"background": 0, "head": 1, "tail": 2},
        "file_ending": ".nii.gz",
    }
    (raw / "dataset.json").write_text(json.dumps(dataset_json))


def write_summary(
    folder: Path, cases: dict[str, dict[str, float]], done: bool = True
) -> None:
    """A validation/summary.json shaped like nnU-Net's compute_metrics_on_folder output;
    with ``done``, the fold is marked validated as train_fold marks it (its stats file,
    empty unless the test writes one)."""
    per_case = [
        {
            "reference_file": f"/gt/{case}.nii.gz",
            "prediction_file": f"{folder}/{case}.nii.gz",
            "metrics": {
                label: {"Dice": d, "IoU": d / (2 - d)} for label, d in dice.items()
            },
        }
        for case, dice in cases.items()
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"metric_per_case": per_case}))
    marker = folder.parent / FOLD_STATS_FILE
    if done and not marker.exists():
        marker.write_text("{}")


GEOMETRY = {
    "spacing": (1.0, 1.0, 1.0),
    "origin": (0.0, 0.0, 0.0),
    "direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
}


def write_model_files(folder: Path) -> None:
    """The ``plans.json`` and ``dataset.json`` nnU-Net copies into a trained model's folder."""
    plans = {
        "dataset_name": REPORT_DATASET,
        "plans_name": folder.name.split("__")[1],
        "image_reader_writer": "SimpleITKIO",
        "label_manager": "LabelManager",
        "configurations": {},
    }
    (folder / "plans.json").write_text(json.dumps(plans))
    dataset_json = {
        "labels": {"background": 0, "head": 1, "tail": 2},
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json))


# The tiny nnU-Net-shaped fixture for ensembling: 2 cases of 8x8x8, classes 1 and 2.
SHAPE = (8, 8, 8)


def reference_segmentation() -> np.ndarray:
    segmentation = np.zeros(SHAPE, dtype=np.uint8)
    segmentation[:3] = 1
    segmentation[5:] = 2
    return segmentation


def probabilities(class_1: list[float], class_2: list[float]) -> np.ndarray:
    """Softmax output: ``class_1``/``class_2`` are the (bg, 1, 2) probabilities in each region."""
    reference = reference_segmentation()
    output = np.zeros((3, *SHAPE), dtype=np.float32)
    output[0] = 1.0
    output[:, reference == 1] = np.array(class_1, dtype=np.float32)[:, None]
    output[:, reference == 2] = np.array(class_2, dtype=np.float32)[:, None]
    return output


def write_probability_method(
    results: Path, method: str, output: np.ndarray, dice: dict[str, float]
) -> None:
    """A method folder as nnU-Net leaves it after training with --npz."""
    folder = results / REPORT_DATASET / method
    for fold, case in ((0, "c1"), (1, "c2")):
        validation = folder / f"fold_{fold}" / "validation"
        write_summary(validation, {case: dice})
        np.savez_compressed(validation / f"{case}.npz", probabilities=output)
        (validation / f"{case}.pkl").write_bytes(pickle.dumps({"sitk_stuff": GEOMETRY}))
    write_model_files(folder)


def write_probability_references(nnunet_folders: dict[str, Path]) -> None:
    """The ensembling fixture's dataset.json and its two cases' reference segmentations."""
    write_dataset_json(nnunet_folders["nnUNet_raw"])
    gt_folder = (
        nnunet_folders["nnUNet_preprocessed"] / REPORT_DATASET / "gt_segmentations"
    )
    gt_folder.mkdir(parents=True)
    for case in ("c1", "c2"):
        sitk.WriteImage(
            sitk.GetImageFromArray(reference_segmentation()),
            str(gt_folder / f"{case}.nii.gz"),
        )
