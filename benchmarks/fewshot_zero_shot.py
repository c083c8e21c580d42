"""LiteMedSAM zero-shot with reference-derived box and point prompts, scored like nnU-Net.

Used by ``fewshot.py``: the validation cases of each fold (nnU-Net's ``splits_final.json``)
are read from the raw dataset with nnU-Net's reader, z-scored per image as nnU-Net's
normalization does, and segmented slice by slice along the first axis (the axis nnU-Net's
2d configuration slices) by ``samnet.prompting.prompted_sam.segment_volume``. Dice and IoU per case and
class follow nnU-Net: a class absent from both reference and prediction is NaN and
skipped; a fold's score is the mean over classes of the per-class mean over cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samnet.models.network import build_network
from samnet.prompting.prompted_sam import segment_volume

KINDS = ("box", "point")


def dice_and_iou(reference: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    """nnU-Net's Dice and IoU of two binary volumes (NaN when both are empty)."""
    intersection = np.logical_and(reference, prediction).sum()
    union = np.logical_or(reference, prediction).sum()
    if union == 0:
        return float("nan"), float("nan")
    return float(2 * intersection / (reference.sum() + prediction.sum())), float(
        intersection / union
    )


def fold_mean(per_case: list[dict[int, tuple[float, float]]]) -> dict[str, float]:
    """Mean foreground Dice and IoU of a fold, as nnU-Net's ``foreground_mean``."""
    classes = sorted(per_case[0])
    means = np.array(
        [np.nanmean([case[c] for case in per_case], axis=0) for c in classes]
    )
    return {"dice": float(means[:, 0].mean()), "iou": float(means[:, 1].mean())}


def zero_shot_folds(
    raw: Path, preprocessed: Path, folds: list[int], progress: Path
) -> dict[str, dict[str, dict[str, float]]]:
    """``{"zero_shot_box": {fold: {"dice", "iou"}}, "zero_shot_point": {...}}``.

    Arguments:
      raw: the dataset's nnU-Net raw folder.
      preprocessed: its preprocessed folder (for the split and the reader in the plans).
      progress: a JSON-lines file of the cases scored so far, one line each: an
        interrupted run resumes from it (a Hippocampus fold takes ~35 min on 2 cores).
    """
    # nnunetv2 reads nnUNet_* variables at import: main() sets them first.
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    classes = sorted(v for v in dataset_json["labels"].values() if v != 0)
    reader = PlansManager(
        str(preprocessed / "nnUNetPlans.json")
    ).image_reader_writer_class()
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    network, _ = build_network(
        "lite_medsam", in_channels=1, num_classes=len(classes) + 1
    )
    network.eval()
    done = {}
    if progress.exists():
        for line in progress.read_text().splitlines():
            record = json.loads(line)
            done[(record["fold"], record["case"])] = record["scores"]
    progress.parent.mkdir(parents=True, exist_ok=True)
    scores = {f"zero_shot_{kind}": {} for kind in KINDS}
    for fold in folds:
        per_case = {kind: [] for kind in KINDS}
        for case in tqdm(splits[fold]["val"], desc=f"zero-shot fold {fold}"):
            if (fold, case) not in done:
                image, _ = reader.read_images(
                    [str(raw / "imagesTr" / f"{case}_0000{ending}")]
                )
                reference, _ = reader.read_seg(
                    str(raw / "labelsTr" / f"{case}{ending}")
                )
                image = (image - image.mean()) / max(float(image.std()), 1e-8)
                labels = segment_volume(network, image, reference[0], classes, KINDS)
                done[(fold, case)] = {
                    kind: {
                        str(c): dice_and_iou(reference[0] == c, labels[kind] == c)
                        for c in classes
                    }
                    for kind in KINDS
                }
                record = {"fold": fold, "case": case, "scores": done[(fold, case)]}
                with progress.open("a") as stream:
                    stream.write(json.dumps(record) + "\n")
            for kind in KINDS:
                per_case[kind].append(
                    {int(c): tuple(v) for c, v in done[(fold, case)][kind].items()}
                )
        for kind in KINDS:
            scores[f"zero_shot_{kind}"][str(fold)] = fold_mean(per_case[kind])
    return scores
