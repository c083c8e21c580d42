"""Which trained models predict: the comparison's best configuration or the models named.

A selection is one model or several (their probabilities averaged), each with the folds it
averages, and the postprocessing nnU-Net's ``determine_postprocessing`` determined for
that configuration (its ``postprocessing.json``), or why there is none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from samnet.core.datasets import dataset_id
from samnet.core.errors import SamnetError
from samnet.core.layout import (
    ENSEMBLES_FOLDER,
    FINAL_CHECKPOINT,
    POSTPROCESSING_SUMMARY,
    REPORT_FOLDER,
)
from samnet.core.methods import Method
from samnet.core.paths import results_folder


@dataclass(frozen=True)
class Member:
    """One trained model: its ``TRAINER__PLANS__CONFIG`` results folder and the folds it averages."""

    folder: Path
    folds: tuple[int, ...]


@dataclass(frozen=True)
class Selection:
    """What predicts: the members (their probabilities averaged when several) and the postprocessing."""

    name: str
    members: tuple[Member, ...]
    postprocessing: Path | None
    postprocessing_note: str


def find_trained_dataset(identifier: str) -> Path:
    """``nnUNet_results/DatasetNNN_Name`` for ``4``, ``Dataset004`` or ``Dataset004_Hippocampus``."""
    number = dataset_id(identifier)
    root = results_folder()
    matches = sorted(
        p
        for p in root.glob(f"Dataset{number:03d}_*")
        if p.is_dir() and not p.name.startswith(".")
    )
    if len(matches) != 1:
        found = ", ".join(m.name for m in matches) or "none"
        raise SamnetError(
            root,
            f"needs exactly one trained dataset with id {number} (found: {found})",
            "train it first (samnet_plan_and_train), or point nnUNet_results at its models",
        )
    return matches[0]


def method_folder_name(spec: str) -> str:
    """``TRAINER:PLANS:CONFIG`` (``--model``) as nnU-Net's folder name ``TRAINER__PLANS__CONFIG``."""
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts):
        raise SamnetError(
            None,
            f"--model '{spec}' is not 'best' or TRAINER:PLANS:CONFIG",
            "e.g. --model nnUNetTrainer:nnUNetPlans:2d (the folder "
            "nnUNetTrainer__nnUNetPlans__2d in the dataset's results)",
        )
    return Method(*parts).folder_name


def trained_folds(
    folder: Path, requested: list[int] | None, checkpoint: str
) -> tuple[int, ...]:
    """``requested`` folds, each with a checkpoint, or every fold of ``folder`` that has one."""
    if requested is None:
        found = sorted(
            int(p.parent.name.removeprefix("fold_"))
            for p in folder.glob(f"fold_*/{checkpoint}")
            if p.parent.name.removeprefix("fold_").isdigit()
        )
        if found:
            return tuple(found)
        raise SamnetError(
            folder,
            f"no fold_K/{checkpoint} here: the model is not trained",
            "train it first: samnet_plan_and_train DATASET",
        )
    for fold in requested:
        if not (folder / f"fold_{fold}" / checkpoint).is_file():
            raise SamnetError(
                folder / f"fold_{fold}" / checkpoint,
                "is missing: this fold is not trained (to the end)",
                "train it, or choose trained folds with --folds",
            )
    return tuple(requested)


def best_configuration(dataset: Path) -> tuple[str, list[str], list[int]]:
    """The report's best configuration: its name, member folders and cross-validation folds."""
    report_file = dataset / REPORT_FOLDER / "report.json"
    if not report_file.is_file():
        raise SamnetError(
            report_file,
            "is missing, so there is no best configuration yet",
            f"run samnet_compare {dataset.name}, or name a model with --model TRAINER:PLANS:CONFIG",
        )
    selection = json.loads(report_file.read_text())["best_configuration"]
    if selection["best"] is None:
        raise SamnetError(
            report_file,
            f"names no best configuration ({selection['sentence']})",
            "validate every method on the same folds and rerun samnet_compare, "
            "or name a model with --model",
        )
    members = next(
        c["members"] for c in selection["candidates"] if c["name"] == selection["best"]
    )
    return selection["best"], members, selection["folds"]


def postprocessing_candidates(
    dataset: Path, members: list[str], folds: list[int]
) -> list[Path]:
    """Where nnU-Net's ``determine_postprocessing`` leaves its postprocessing for these members.

    A single model: its ``crossval_results_folds_X`` (``find_best_configuration`` and
    ``nnUNetv2_accumulate_crossval_results``); an ensemble: samnet's ``samnet_ensembles/a+b``
    and nnU-Net's ``ensembles/ensemble___a___b___X``.
    """
    folds_text = "_".join(str(fold) for fold in folds)
    if len(members) == 1:
        return [dataset / members[0] / f"crossval_results_folds_{folds_text}"]
    return [
        dataset / ENSEMBLES_FOLDER / "+".join(members),
        dataset / "ensembles" / f"ensemble___{'___'.join(members)}___{folds_text}",
    ]


def find_postprocessing(
    dataset: Path, members: list[str], folds: list[int]
) -> tuple[Path | None, str]:
    """The postprocessing determined for these members (the ``postprocessing.json`` nnU-Net
    writes beside its ``postprocessing.pkl``, read without unpickling), or None and why,
    with the fix."""
    folders = postprocessing_candidates(dataset, members, folds)
    for folder in folders:
        if (folder / POSTPROCESSING_SUMMARY).is_file():
            return (
                folder / POSTPROCESSING_SUMMARY,
                "determined by nnU-Net on cross-validation",
            )
    looked = ", ".join(str(folder / POSTPROCESSING_SUMMARY) for folder in folders)
    return None, (
        f"none: no postprocessing determined for this configuration (looked for {looked}); "
        "predicting without it. To have one: nnUNetv2_determine_postprocessing -i FOLDER "
        "-ref $nnUNet_preprocessed/DATASET/gt_segmentations on the configuration's "
        "cross-validation predictions (nnUNetv2_find_best_configuration does both)"
    )


def select_models(
    dataset: Path,
    models: list[str],
    folds: list[int] | None = None,
    checkpoint: str = FINAL_CHECKPOINT,
) -> Selection:
    """The report's best configuration (``models == ["best"]``) or the ``TRAINER:PLANS:CONFIG`` models."""
    if models == ["best"]:
        name, member_names, cv_folds = best_configuration(dataset)
    elif "best" in models:
        raise SamnetError(
            None,
            "--model best cannot be combined with other models",
            "give either best or one or more TRAINER:PLANS:CONFIG",
        )
    else:
        member_names = [method_folder_name(spec) for spec in models]
        name, cv_folds = "+".join(member_names), None
    members = []
    for member_name in member_names:
        folder = dataset / member_name
        if not (folder / "plans.json").is_file():
            raise SamnetError(
                folder,
                "is not a trained model folder (no plans.json)",
                f"choose one of: {', '.join(p.name for p in sorted(dataset.glob('*__*__*')))}",
            )
        members.append(Member(folder, trained_folds(folder, folds, checkpoint)))
    postprocessing, note = find_postprocessing(
        dataset, member_names, cv_folds or list(members[0].folds)
    )
    return Selection(name, tuple(members), postprocessing, note)


def describe(selection: Selection) -> str:
    """What will predict, for the user, in a few lines."""
    count = len(selection.members)
    kind = f"ensemble of {count} models" if count > 1 else "single model"
    lines = [f"samnet: predicting with {selection.name} ({kind})"]
    for member in selection.members:
        folds = " ".join(str(f) for f in member.folds)
        lines.append(f"  {member.folder.name}: folds {folds}")
    used = selection.postprocessing
    lines.append(f"  postprocessing: {used}, " if used else "  postprocessing: ")
    lines[-1] += selection.postprocessing_note
    return "\n".join(lines)


def training_dataset_json(selection: Selection) -> dict:
    """The ``dataset.json`` nnU-Net copied into the (first) model folder."""
    return json.loads((selection.members[0].folder / "dataset.json").read_text())


def channel_names(dataset_json: dict) -> list[str]:
    channels = dataset_json.get("channel_names") or dataset_json["modality"]
    return [channels[key] for key in sorted(channels, key=int)]
