"""What every benchmark records next to its numbers: the machine, the software and the date."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class RealDataset:
    """A dataset of ../shared/data as the benchmarks convert and train it.

    Attributes:
      dataset: the nnU-Net dataset the conversion writes.
      convert: ``python -m`` arguments of the conversion.
      baseline: the nnU-Net 2d configuration SAM is compared with on CPU (``2d_lowres``:
        nnU-Net's 2d U-Net at the spacing SAM sees, where the native 2d patch is too
        large for a CPU).
      batch_size: the CPU batch of SAM and that baseline.
    """

    dataset: str
    convert: tuple[str, ...]
    baseline: str
    batch_size: int


_CXR = SHARED_DATA / "CXR_Lungs"
DATASETS = {
    "hippocampus": RealDataset(
        "Dataset004_Hippocampus",
        ("samnet.cli.convert_msd", str(SHARED_DATA / "Task04_Hippocampus")),
        "2d",
        32,
    ),
    "cxr": RealDataset(
        "Dataset501_CXRLungs",
        (
            "samnet.cli.convert_2d",
            *("--images", str(_CXR / "images"), "--labels", str(_CXR / "labels")),
            *("--name", "CXRLungs", "--id", "501", "--modality", "X-ray"),
            *("--label-names", "background,right_lung,left_lung"),
        ),
        "2d_lowres",
        4,
    ),
}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "kind": "GPU" if gpu else "CPU",
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "nnunetv2": version("nnunetv2"),
        "samnet": version("samnet"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def work_environment(name: str | None = None) -> dict[str, str]:
    """The caller's nnU-Net folders, or private ones under benchmarks/work/ (git-ignored).

    Raw data is shared; a ``name`` gives the benchmark its own preprocessed and results
    folders (``work/<name>/``), so its plans never replace another benchmark's.
    """
    environment = dict(os.environ)
    own = WORK / name if name else WORK
    for variable, folder in (
        ("nnUNet_raw", WORK / "raw"),
        ("nnUNet_preprocessed", own / "preprocessed"),
        ("nnUNet_results", own / "results"),
    ):
        environment.setdefault(variable, str(folder))
    return environment


def run_command(command: list[str], environment: dict[str, str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, env=environment, check=True)


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


def ensure_raw(real: RealDataset, environment: dict[str, str]) -> None:
    """Convert the shared data into ``nnUNet_raw`` once."""
    if not (Path(environment["nnUNet_raw"]) / real.dataset).exists():
        run_command([sys.executable, "-m", *real.convert], environment)


def plan_sam_variant(
    dataset, plans_name: str, overrides: dict, device: str = "cpu"
) -> str:
    """The SAM plan with ``overrides`` fixed (as ``samnet_plan --<name> VALUE`` would), as
    its own plans file ``plans_name``, its SAM configuration preprocessed; returns
    ``plans_name``. An existing plans file of that name is kept.

    Variants at the same spacing read one preprocessed data folder (named by the spacing),
    so they also share the embedding cache of the windows as they are.

    ``dataset``: a ``samnet.core.datasets.Dataset``. nnunetv2 reads nnUNet_* variables
    at import: the caller sets them before calling.
    """
    import functools

    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        plan_experiment_dataset,
    )

    from samnet.core.layout import SAM_CONFIGURATION
    from samnet.pipeline.planning import preprocess
    from samnet.planners.hardware import detect_hardware
    from samnet.planners.sam_planner import SAMPlanner

    plans_file = dataset.plans_file(plans_name)
    if not plans_file.exists():
        planner = functools.partial(
            SAMPlanner, hardware=detect_hardware(device), overrides=overrides
        )
        plan_experiment_dataset(dataset.id, planner, overwrite_plans_name=plans_name)
        plans = json.loads(plans_file.read_text())
        sam = plans["configurations"][SAM_CONFIGURATION]
        spacing = "x".join(f"{s:g}" for s in sam["spacing"])
        sam["data_identifier"] = f"samnetVariants_{SAM_CONFIGURATION}_{spacing}"
        plans_file.write_text(json.dumps(plans, indent=2))
    preprocess(dataset, plans_name, [SAM_CONFIGURATION])
    return plans_name
