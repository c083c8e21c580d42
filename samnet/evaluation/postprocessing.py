"""nnU-Net's postprocessing for the best configuration, determined on its cross-validation.

As nnU-Net's ``find_best_configuration`` does once it has chosen: the chosen
configuration's validation segmentations (a single model's folds gathered into
``crossval_results_folds_X`` as ``accumulate_cv_results`` does, or samnet's ensemble
folder) go through ``determine_postprocessing``, which keeps each "largest component
only" rule that raises the cross-validation Dice and writes ``postprocessing.pkl`` (and
``postprocessing.json``) beside them, where ``samnet_predict`` looks for it
(``samnet.inference.selection.postprocessing_candidates``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from samnet.core.atomic import atomic_folder
from samnet.core.layout import POSTPROCESSING_SUMMARY
from samnet.core.paths import DEFAULT_PROCESSES, preprocessed_folder, results_folder
from samnet.evaluation.ensembles import validation_summaries
from samnet.inference.selection import postprocessing_candidates


def is_up_to_date(folder: Path, member_folders: list[Path], folds: list[int]) -> bool:
    """Whether ``folder`` holds postprocessing made after every member's last validation."""
    made = folder / POSTPROCESSING_SUMMARY
    if not (made.is_file() and (folder / "postprocessing.pkl").is_file()):
        return False
    return all(
        summary.stat().st_mtime < made.stat().st_mtime
        for member in member_folders
        for summary in validation_summaries(member, folds)
    )


def missing_inputs(
    gt_folder: Path, segmentation_folders: list[Path], file_ending: str
) -> str | None:
    """Why postprocessing cannot be determined here, or None when it can."""
    if not gt_folder.is_dir():
        return f"it needs the reference segmentations in {gt_folder}"
    for folder in segmentation_folders:
        if not any(folder.glob(f"*{file_ending}")):
            return f"it needs the validation segmentations in {folder}"
    return None


def gather_folds(
    validation_folders: list[Path], target: Path, file_ending: str
) -> None:
    """One folder with every fold's validation segmentations, as ``accumulate_cv_results`` makes."""
    with atomic_folder(target, overwrite=True) as temporary:
        for validation in validation_folders:
            for segmentation in validation.glob(f"*{file_ending}"):
                shutil.copy2(segmentation, temporary / segmentation.name)


def determine_best_postprocessing(
    dataset_name: str, selection: dict, file_ending: str
) -> dict | None:
    """Determine (or reuse) the postprocessing of ``selection["best"]``; None when there is no best.

    Returns where ``postprocessing.pkl`` is, the rules kept, and the cross-validation
    foreground Dice before and after them; or, when it cannot be determined, why
    (``file`` None and ``reason``).
    """
    if selection["best"] is None:
        return None
    results = results_folder() / dataset_name
    members = next(
        c["members"] for c in selection["candidates"] if c["name"] == selection["best"]
    )
    folds = selection["folds"]
    member_folders = [results / member for member in members]
    folder = postprocessing_candidates(results, members, folds)[0]
    gt_folder = preprocessed_folder() / dataset_name / "gt_segmentations"
    # A single model's segmentations are in its folds; an ensemble's in its own folder.
    segmentation_folders = (
        [member_folders[0] / f"fold_{fold}" / "validation" for fold in folds]
        if len(members) == 1
        else [folder]
    )
    reason = missing_inputs(gt_folder, segmentation_folders, file_ending)
    if reason:
        return {"configuration": selection["best"], "file": None, "reason": reason}
    # nnunetv2 reads the nnUNet_* variables at import: after configure_environment().
    from nnunetv2.postprocessing.remove_connected_components import (
        determine_postprocessing,
    )

    if not is_up_to_date(folder, member_folders, folds):
        if len(members) == 1:
            gather_folds(segmentation_folders, folder, file_ending)
        determine_postprocessing(
            str(folder),
            str(gt_folder),
            str(member_folders[0] / "plans.json"),
            str(member_folders[0] / "dataset.json"),
            int(DEFAULT_PROCESSES),
        )
    summary = json.loads((folder / POSTPROCESSING_SUMMARY).read_text())
    return {
        "configuration": selection["best"],
        "file": str(folder / "postprocessing.pkl"),
        "rules": [
            {"function": name, "arguments": arguments}
            for name, arguments in zip(
                summary["postprocessing_fns"], summary["postprocessing_kwargs"]
            )
        ],
        "dice_before": summary["input_folder"]["foreground_mean"]["Dice"],
        "dice_after": summary["postprocessed"]["foreground_mean"]["Dice"],
    }


def postprocessing_sentence(postprocessing: dict | None, titles: dict[str, str]) -> str:
    """What nnU-Net's postprocessing does for the best configuration, in one sentence.

    ``titles``: what each configuration is called (``samnet.evaluation.names``).
    """
    if postprocessing is None:
        return "No postprocessing: there is no best configuration."
    configuration = titles[postprocessing["configuration"]]
    if postprocessing["file"] is None:
        return (
            f"No postprocessing determined for {configuration}: "
            f"{postprocessing['reason']}."
        )
    rules = postprocessing["rules"]
    kept = (
        "; ".join(
            f"{rule['function']}({', '.join(f'{k}={v}' for k, v in rule['arguments'].items())})"
            for rule in rules
        )
        if rules
        else "no rule (removing all but the largest component did not raise the Dice)"
    )
    return (
        f"Postprocessing of {configuration} determined by nnU-Net on the "
        f"cross-validation: {kept}; foreground Dice {postprocessing['dice_before']:.4f} before, "
        f"{postprocessing['dice_after']:.4f} after. samnet_predict applies it."
    )
