"""Fingerprint, plan and preprocess a dataset with nnU-Net's API, skipping what is already done.

What is done is checked, not assumed: plans are kept (with any hand edits) while the
fingerprint and ``dataset.json`` they were planned from are the dataset's current ones,
and refused when not; a data folder counts as preprocessed only when its stamp (in
``PREPROCESSED_STAMPS_FOLDER``, written once nnU-Net's preprocessing finished) names the
plan's current preprocessing settings and the raw dataset's current cases.

Import it after ``configure_environment()``: nnunetv2 reads the ``nnUNet_*`` variables
once, when it is imported.
"""

from __future__ import annotations

import functools
import inspect
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
from nnunetv2.utilities.crossval_split import generate_crossval_split
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from samnet.core.datasets import Dataset
from samnet.core.errors import SamnetError
from samnet.core.layout import (
    BASELINE_PLANS,
    PREPROCESSED_STAMPS_FOLDER,
    RESENC_M_PLANS,
    SAM_CONFIGURATION,
    SAM_PLANS,
    SPLITS_FILE,
)
from samnet.core.paths import DEFAULT_PROCESSES
from samnet.planners.hardware import detect_hardware
from samnet.planners.plans_file import (
    PLANNED_FROM_KEY,
    atomic_planner,
    json_sha256,
    planned_from,
    write_json_atomically,
)
from samnet.planners.sam_planner import SAMPlanner

# nnU-Net's planner of each plans identifier a baseline can train on
# (samnet.pipeline.options.BASELINES), writing its plans file atomically.
BASELINE_PLANNERS: dict[str, type[ExperimentPlanner]] = {
    BASELINE_PLANS: atomic_planner(ExperimentPlanner),
    RESENC_M_PLANS: atomic_planner(nnUNetPlannerResEncM),
}
# What nnU-Net's DefaultPreprocessor reads from a configuration and from the plans: a
# change to any of them changes the preprocessed data. The patch size (only the storage's
# chunking) and the training settings do not.
PREPROCESSING_SETTINGS = (
    "data_identifier",
    "preprocessor_name",
    "spacing",
    "normalization_schemes",
    "use_mask_for_norm",
    "resampling_fn_data",
    "resampling_fn_data_kwargs",
    "resampling_fn_seg",
    "resampling_fn_seg_kwargs",
)
PLANS_PREPROCESSING_SETTINGS = (
    "transpose_forward",
    "image_reader_writer",
    "foreground_intensity_properties_per_channel",
)
# nnU-Net's trainer splits with these when splits_final.json is missing (do_split).
SPLIT_SEED = 12345
SPLIT_FOLDS = 5


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


def preprocessing_settings(
    dataset: Dataset, plans_identifier: str, configuration: str
) -> dict[str, Any]:
    """What the preprocessed data of ``configuration`` depends on, besides the raw images."""
    plans = json.loads(dataset.plans_file(plans_identifier).read_text())
    settings = resolved_configuration(plans, configuration)
    dataset_json = json.loads((dataset.preprocessed / "dataset.json").read_text())
    return {
        **{key: settings.get(key) for key in PREPROCESSING_SETTINGS},
        **{key: plans.get(key) for key in PLANS_PREPROCESSING_SETTINGS},
        "dataset_json": json_sha256(dataset_json),
    }


def resolved_configuration(plans: dict, configuration: str) -> dict[str, Any]:
    """``configuration``'s entries, those it ``inherits_from`` included (as nnU-Net's
    PlansManager resolves them)."""
    entries = plans["configurations"][configuration]
    parent = entries.get("inherits_from")
    return {**resolved_configuration(plans, parent), **entries} if parent else entries


def trained_from(dataset: Dataset, plans_identifier: str, configuration: str) -> str:
    """Hash of what a fold of ``configuration`` trains on: its configuration (the batch
    size aside: the budget sets it) and its preprocessed data's stamp. A re-plan or a
    re-preprocessing with other settings or cases changes it."""
    plans = json.loads(dataset.plans_file(plans_identifier).read_text())
    entries = {
        key: value
        for key, value in resolved_configuration(plans, configuration).items()
        if key != "batch_size"
    }
    stamp = recorded_stamp(dataset, plans_identifier, configuration)
    return json_sha256({"configuration": entries, "data": stamp})


def training_cases(dataset: Dataset) -> list[str]:
    """The raw dataset's training cases, as nnU-Net's preprocessing lists them (sorted)."""
    dataset_json = json.loads((dataset.preprocessed / "dataset.json").read_text())
    return sorted(
        get_filenames_of_train_images_and_targets(str(dataset.raw), dataset_json)
    )


def preprocessed_stamp(
    dataset: Dataset, plans_identifier: str, configuration: str
) -> dict[str, Any]:
    """The stamp a complete preprocessing of ``configuration`` leaves in its data folder."""
    return {
        "settings": preprocessing_settings(dataset, plans_identifier, configuration),
        "cases": training_cases(dataset),
    }


def stamp_file(dataset: Dataset, plans_identifier: str, configuration: str) -> Path:
    folder = data_identifier(dataset, plans_identifier, configuration)
    return dataset.preprocessed / PREPROCESSED_STAMPS_FOLDER / f"{folder}.json"


def recorded_stamp(
    dataset: Dataset, plans_identifier: str, configuration: str
) -> dict[str, Any] | None:
    """The stamp of ``configuration``'s data folder; None where there is none (not
    preprocessed, interrupted, or preprocessed before samnet wrote stamps)."""
    path = stamp_file(dataset, plans_identifier, configuration)
    return json.loads(path.read_text()) if path.is_file() else None


def is_preprocessed(
    dataset: Dataset, plans_identifier: str, configuration: str
) -> bool:
    """True when ``configuration``'s data was preprocessed, completely, with the plan's
    current settings and from the raw dataset's current cases."""
    recorded = recorded_stamp(dataset, plans_identifier, configuration)
    return recorded == preprocessed_stamp(dataset, plans_identifier, configuration)


def require_same_preprocessing(
    dataset: Dataset, plans_identifier: str, configuration: str
) -> None:
    """Stop where ``configuration`` shares a data folder, preprocessed in this run for
    another plans, whose settings differ from its own (it would train on data it was
    not planned for)."""
    recorded = recorded_stamp(dataset, plans_identifier, configuration) or {}
    ours = preprocessing_settings(dataset, plans_identifier, configuration)
    theirs = recorded.get("settings", {})
    differing = sorted(key for key in ours if theirs.get(key) != ours[key])
    if differing:
        raise SamnetError(
            dataset.plans_file(plans_identifier),
            f"configuration {configuration} reads the preprocessed data "
            f"{ours['data_identifier']}, which another plans file preprocessed with other "
            f"settings ({', '.join(differing)})",
            "make the plans agree (re-plan with --overwrite), or give this configuration "
            "a data_identifier of its own",
        )


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
        plans_identifier = plans_identifier_of(planner)
        if not keep_plans(dataset, plans_identifier, overwrite):
            plan_experiment_dataset(dataset.id, planner)
        preprocessed[plans_identifier] = preprocess(
            dataset, plans_identifier, configurations, overwrite, written
        )
        written |= data_folders(
            dataset, {plans_identifier: preprocessed[plans_identifier]}
        )
    ensure_splits(dataset)
    return preprocessed


def plans_identifier_of(planner: Callable[..., Any]) -> str:
    """The plans identifier an nnU-Net planner (class or partial) writes: its ``plans_name``."""
    return inspect.signature(planner).parameters["plans_name"].default


def keep_plans(dataset: Dataset, plans_identifier: str, overwrite: bool) -> bool:
    """True where the plans file exists, ``overwrite`` is not asked and it was planned from
    the dataset's current fingerprint and ``dataset.json``: it is kept as it is, hand
    edits included. Plans made outside samnet (no record) are kept as they are.

    Raises:
      SamnetError: the plans were made from another fingerprint or ``dataset.json``.
    """
    plans_file = dataset.plans_file(plans_identifier)
    if overwrite or not plans_file.is_file():
        return False
    recorded = json.loads(plans_file.read_text()).get(PLANNED_FROM_KEY)
    if recorded is None:
        return True
    current = planned_from(
        json.loads((dataset.preprocessed / "dataset_fingerprint.json").read_text()),
        json.loads((dataset.raw / "dataset.json").read_text()),
    )
    changed = [name for name, digest in current.items() if recorded.get(name) != digest]
    if changed:
        raise SamnetError(
            plans_file,
            f"was planned from another {' and '.join(changed)} than the dataset's current "
            "one (the dataset changed since)",
            "pass --overwrite to re-plan and re-preprocess (copy your edits of this file "
            "first: re-planning replaces them)",
        )
    return True


def ensure_splits(dataset: Dataset) -> Path:
    """nnU-Net's 5-fold ``splits_final.json``, written atomically when missing (as its
    trainer would, before any fold trains); an existing one is kept, with a warning
    naming the training cases in none of its folds.

    Raises:
      SamnetError: it names cases the dataset no longer has.
    """
    path = dataset.preprocessed / SPLITS_FILE
    cases = training_cases(dataset)
    if not path.is_file():
        splits = generate_crossval_split(cases, seed=SPLIT_SEED, n_splits=SPLIT_FOLDS)
        folds = [
            {part: [str(case) for case in fold[part]] for part in fold}
            for fold in splits
        ]
        write_json_atomically(folds, path)
        return path
    named = {
        case
        for fold in json.loads(path.read_text())
        for part in fold.values()
        for case in part
    }
    gone = sorted(named - set(cases))
    if gone:
        raise SamnetError(
            path,
            f"names cases the dataset does not have: {', '.join(gone)}",
            "put them back, or delete this file to split again (then retrain every "
            "fold with --overwrite: its cases change)",
        )
    left_out = sorted(set(cases) - named)
    if left_out:
        print(
            f"samnet: warning: {len(left_out)} training case(s) are in no fold of {path} "
            f"(added after it was written), so no fold trains or validates on them: "
            f"{', '.join(left_out)}. To use them, delete {path} and re-run with "
            "--overwrite (every fold is retrained on the new splits)."
        )
    return path


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
    todo = []
    for configuration in configurations:
        if data_identifier(dataset, plans_identifier, configuration) in written:
            require_same_preprocessing(dataset, plans_identifier, configuration)
        elif overwrite or not is_preprocessed(dataset, plans_identifier, configuration):
            todo.append(configuration)
    # Removed before and written after: an interrupted preprocessing has no stamp and
    # is redone.
    for configuration in todo:
        stamp_file(dataset, plans_identifier, configuration).unlink(missing_ok=True)
    if todo:
        processes = int(DEFAULT_PROCESSES)
        preprocess_dataset(
            dataset.id, plans_identifier, todo, num_processes=[processes] * len(todo)
        )
    for configuration in todo:
        write_json_atomically(
            preprocessed_stamp(dataset, plans_identifier, configuration),
            stamp_file(dataset, plans_identifier, configuration),
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
    existing plan for other overrides is an error: re-planning must be explicit, and so
    is re-planning a plan made from another fingerprint or ``dataset.json`` (``keep_plans``).
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    plans_file = dataset.plans_file(SAM_PLANS)
    ensure_fingerprint(dataset, overwrite)
    if keep_plans(dataset, SAM_PLANS, overwrite):
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
    planner = functools.partial(
        SAMPlanner, hardware=detect_hardware(device), overrides=given
    )
    plan_experiment_dataset(dataset.id, planner)
    return plans_file
