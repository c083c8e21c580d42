"""Fingerprint, plan and preprocess a dataset with nnU-Net's API, skipping what is already done.

Import it after ``configure_environment()``: nnunetv2 reads the ``nnUNet_*`` variables
once, when it is imported.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
    ExperimentPlanner,
)
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    nnUNetPlannerResEncM,
)
from nnunetv2.experiment_planning.plan_and_preprocess_api import (
    extract_fingerprint_dataset,
    plan_experiment_dataset,
    preprocess_dataset,
)

from samnet.core.datasets import Dataset
from samnet.core.errors import SamnetError
from samnet.core.layout import (
    BASELINE_PLANS,
    RESENC_M_PLANS,
    SAM_CONFIGURATION,
    SAM_PLANS,
)
from samnet.core.paths import DEFAULT_PROCESSES
from samnet.planners.hardware import detect_hardware
from samnet.planners.sam_planner import SAMPlanner

# nnU-Net's planner of each plans identifier a baseline can train on
# (samnet.pipeline.options.BASELINES).
BASELINE_PLANNERS: dict[str, type[ExperimentPlanner]] = {
    BASELINE_PLANS: ExperimentPlanner,
    RESENC_M_PLANS: nnUNetPlannerResEncM,
}


def planned_configurations(plans_file: Path) -> list[str]:
    return sorted(json.loads(plans_file.read_text())["configurations"])


def data_identifier(dataset: Dataset, plans_identifier: str, configuration: str) -> str:
    """The ``nnUNet_preprocessed/DATASET/`` folder that holds ``configuration``'s data;
    several plans can share one (nnU-Net's default and ResEnc plans for 2d and 3d_fullres)."""
    plans = json.loads(dataset.plans_file(plans_identifier).read_text())
    return plans["configurations"][configuration]["data_identifier"]


def data_folders(dataset: Dataset, preprocessed: dict[str, list[str]]) -> set[str]:
    """The data identifiers of the configurations ``preprocessed`` lists by plans identifier."""
    return {
        data_identifier(dataset, plans_identifier, configuration)
        for plans_identifier, configurations in preprocessed.items()
        for configuration in configurations
    }


def is_preprocessed(
    dataset: Dataset, plans_identifier: str, configuration: str
) -> bool:
    """True when every training case of ``configuration`` has its preprocessed properties file."""
    folder = dataset.preprocessed / data_identifier(
        dataset, plans_identifier, configuration
    )
    dataset_json = dataset.preprocessed / "dataset.json"
    expected = json.loads(dataset_json.read_text())["numTraining"]
    return len(list(folder.glob("*.pkl"))) == expected


def plan_and_preprocess(
    dataset: Dataset,
    configurations: list[str] | None,
    planner_class: Callable[..., Any] | None = None,
    overwrite: bool = False,
) -> tuple[str, list[str]]:
    """Plan with ``planner_class`` (nnU-Net's default planner when None) and preprocess ``configurations``.

    ``configurations`` None means every 2d/3d_fullres configuration the planner made.
    Returns the plans identifier and the configurations that were preprocessed.
    """
    planner = planner_class or ExperimentPlanner
    ((plans_identifier, preprocessed),) = plan_baselines(
        dataset, [planner], configurations, overwrite
    ).items()
    return plans_identifier, preprocessed


def plan_baselines(
    dataset: Dataset,
    planners: Sequence[Callable[..., Any]],
    configurations: list[str] | None,
    overwrite: bool = False,
) -> dict[str, list[str]]:
    """Plan with each of nnU-Net's ``planners`` (classes, e.g. ``BASELINE_PLANNERS``'
    values) and preprocess ``configurations`` of each plans; a data folder that several
    plans share is preprocessed once, also with ``overwrite``.

    ``configurations`` None means every 2d/3d_fullres configuration each planner made.
    Returns the preprocessed configurations by plans identifier, in the planners' order.
    """
    ensure_fingerprint(dataset, overwrite)
    written: set[str] = set()
    preprocessed = {}
    for planner in planners:
        _, plans_identifier = plan_experiment_dataset(dataset.id, planner)
        preprocessed[plans_identifier] = preprocess(
            dataset, plans_identifier, configurations, overwrite, written
        )
        written |= data_folders(
            dataset, {plans_identifier: preprocessed[plans_identifier]}
        )
    return preprocessed


def ensure_fingerprint(dataset: Dataset, overwrite: bool) -> None:
    """Extract nnU-Net's dataset fingerprint unless it exists (or ``overwrite``)."""
    if overwrite or not (dataset.preprocessed / "dataset_fingerprint.json").exists():
        extract_fingerprint_dataset(
            dataset.id, num_processes=int(DEFAULT_PROCESSES), clean=True
        )


def preprocess(
    dataset: Dataset,
    plans_identifier: str,
    configurations: list[str] | None,
    overwrite: bool = False,
    written: Collection[str] = (),
) -> list[str]:
    """Preprocess the planned ``configurations`` not yet preprocessed; returns them.

    ``configurations`` None means every 2d/3d_fullres configuration that was planned.
    Data folders in ``written`` (preprocessed for other plans in this run) are kept,
    also with ``overwrite``.
    """
    plans_file = dataset.plans_file(plans_identifier)
    available = planned_configurations(plans_file)
    if configurations is None:
        configurations = [c for c in ("2d", "3d_fullres") if c in available]
    missing = [c for c in configurations if c not in available]
    if missing:
        raise SamnetError(
            plans_file,
            f"configurations {missing} were not planned for this dataset (planned: {available})",
            "choose from the planned ones with --configurations",
        )
    todo = [
        c
        for c in configurations
        if data_identifier(dataset, plans_identifier, c) not in written
        and (overwrite or not is_preprocessed(dataset, plans_identifier, c))
    ]
    if todo:
        processes = int(DEFAULT_PROCESSES)
        preprocess_dataset(
            dataset.id, plans_identifier, todo, num_processes=[processes] * len(todo)
        )
    return configurations


def plan_sam(
    dataset: Dataset,
    device: str,
    overrides: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Plan SAM with ``SAMPlanner`` for the ``device`` ("auto", "cpu", "cuda") and return
    the plans file; an existing SAM plan is kept unless ``overwrite``.

    ``overrides`` fix decisions by rule name (None values are ignored). Asking an
    existing plan for other overrides is an error: re-planning must be explicit.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    plans_file = dataset.plans_file(SAM_PLANS)
    if plans_file.exists() and not overwrite:
        plans = json.loads(plans_file.read_text())
        if SAM_CONFIGURATION in plans["configurations"]:
            recorded = plans["samnet"]["overrides"]
            if given and given != recorded:
                raise SamnetError(
                    plans_file,
                    f"the existing SAM plan was made with overrides {recorded}, not {given}",
                    "pass --overwrite to re-plan (SAM folds trained on the old plan are retrained)",
                )
            return plans_file
    ensure_fingerprint(dataset, overwrite)
    planner = functools.partial(
        SAMPlanner, hardware=detect_hardware(device), overrides=given
    )
    plan_experiment_dataset(dataset.id, planner)
    return plans_file
