"""Fingerprint, plan and preprocess a dataset with nnU-Net's API, skipping what is already done."""

from __future__ import annotations

import json
from pathlib import Path

from samnet.errors import SamnetError
from samnet.paths import DEFAULT_PROCESSES, preprocessed_folder

BASELINE_PLANS = "nnUNetPlans"


def planned_configurations(plans_file: Path) -> list[str]:
    return sorted(json.loads(plans_file.read_text())["configurations"])


def is_preprocessed(
    dataset_name: str, plans_identifier: str, configuration: str
) -> bool:
    """True when every training case of ``configuration`` has its preprocessed properties file."""
    base = preprocessed_folder() / dataset_name
    plans = json.loads((base / f"{plans_identifier}.json").read_text())
    data_identifier = plans["configurations"][configuration]["data_identifier"]
    expected = json.loads((base / "dataset.json").read_text())["numTraining"]
    return len(list((base / data_identifier).glob("*.pkl"))) == expected


def plan_and_preprocess(
    dataset_id: int,
    dataset_name: str,
    configurations: list[str] | None,
    planner_class=None,
    overwrite: bool = False,
) -> tuple[str, list[str]]:
    """Plan with ``planner_class`` (nnU-Net's default planner when None) and preprocess ``configurations``.

    ``configurations`` None means every 2d/3d_fullres configuration the planner made.
    Returns the plans identifier and the configurations that were preprocessed.
    """
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    planner_class = planner_class or ExperimentPlanner
    processes = int(DEFAULT_PROCESSES)
    base = preprocessed_folder() / dataset_name
    if overwrite or not (base / "dataset_fingerprint.json").exists():
        extract_fingerprint_dataset(dataset_id, num_processes=processes, clean=True)
    _, plans_identifier = plan_experiment_dataset(dataset_id, planner_class)
    available = planned_configurations(base / f"{plans_identifier}.json")
    if configurations is None:
        configurations = [c for c in ("2d", "3d_fullres") if c in available]
    missing = [c for c in configurations if c not in available]
    if missing:
        raise SamnetError(
            base / f"{plans_identifier}.json",
            f"configurations {missing} were not planned for this dataset (planned: {available})",
            "choose from the planned ones with --configurations",
        )
    todo = [
        c
        for c in configurations
        if overwrite or not is_preprocessed(dataset_name, plans_identifier, c)
    ]
    if todo:
        preprocess_dataset(
            dataset_id, plans_identifier, todo, num_processes=[processes] * len(todo)
        )
    return plans_identifier, configurations
