"""Plans files written all at once, each with a record of the inputs it was planned from.

nnU-Net's ``ExperimentPlanner.save_plans`` writes the plans file in place: a kill
mid-write leaves half a JSON file. ``AtomicPlansMixin`` writes it into a temporary
sibling renamed into place, and records hashes of the dataset fingerprint and
``dataset.json`` the plan was made from (``PLANNED_FROM_KEY``), so that a caller can tell
plans that are still current (kept, with any hand edits) from stale ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
    ExperimentPlanner,
)
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from samnet.core.atomic import atomic_file

# The plans' entry naming what they were planned from; nnU-Net ignores unknown entries.
PLANNED_FROM_KEY = "samnet_planned_from"


def json_sha256(value: Any) -> str:
    """Hash of a JSON value, independent of key order and formatting."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def planned_from(dataset_fingerprint: dict, dataset_json: dict) -> dict[str, str]:
    """The record ``AtomicPlansMixin`` stores: hashes of the planner's two inputs."""
    return {
        "dataset_fingerprint.json": json_sha256(dataset_fingerprint),
        "dataset.json": json_sha256(dataset_json),
    }


def write_json_atomically(value: Any, path: Path) -> None:
    """``value`` as JSON in ``path``, which a kill mid-write leaves as it was."""
    with atomic_file(path) as handle:
        handle.write(json.dumps(value, indent=4).encode())


class AtomicPlansMixin:
    """Put before an ``ExperimentPlanner`` subclass: its ``save_plans``, atomic and recorded."""

    # Configurations the planner may make: an old one of these names that a re-plan does
    # not make again (a 3d_lowres no longer needed) is dropped, not kept as the user's own.
    planned_configurations: tuple[str, ...] = (
        "2d",
        "3d_fullres",
        "3d_lowres",
        "3d_cascade_fullres",
    )

    def save_plans(self: Any, plans: dict) -> None:
        recursive_fix_for_json_export(plans)
        plans[PLANNED_FROM_KEY] = planned_from(
            self.dataset_fingerprint, self.dataset_json
        )
        plans_file = (
            Path(nnUNet_preprocessed)
            / self.dataset_name
            / f"{self.plans_identifier}.json"
        )
        if plans_file.is_file():
            # As nnU-Net's save_plans: configurations the planner does not make (the
            # user's own) are kept.
            old = json.loads(plans_file.read_text())["configurations"]
            kept = {
                name: configuration
                for name, configuration in old.items()
                if name not in (*plans["configurations"], *self.planned_configurations)
            }
            plans["configurations"].update(kept)
        write_json_atomically(plans, plans_file)
        print(f"Plans were saved to {plans_file}")


def atomic_planner(planner: type[ExperimentPlanner]) -> type[ExperimentPlanner]:
    """``planner`` with ``AtomicPlansMixin``'s ``save_plans``, under the same class name
    (nnU-Net records it in the plans as ``experiment_planner_used``)."""
    return type(planner.__name__, (AtomicPlansMixin, planner), {})
