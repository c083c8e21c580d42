"""A Medical Segmentation Decathlon submission for Task04_Hippocampus from the comparison's best model.

    .venv/bin/python benchmarks/msd_hippocampus.py [--device auto]

Runs after ``compare_hippocampus.py`` in its folders (``benchmarks/work/compare/``):
``samnet_compare`` (which determines the best configuration's postprocessing), then
``samnet_export_msd`` on the 52 unlabelled test images, then ``samnet_validate_submission``
on the zip. The submission goes to ``benchmarks/work/msd_submission/`` (predictions are
not committed); what it was made from, its validation and the wall time per case go to
``benchmarks/results/msd_hippocampus_<cpu|gpu>.json``, and six test images with their
predicted labels to ``msd_hippocampus_<cpu|gpu>_overlays.png`` beside it
(``--overlays-only`` redraws them from an existing submission).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from common import (
    RESULTS,
    SHARED_DATA,
    WORK,
    machine,
    run_command,
    work_environment,
    write_result,
)

from samnet.evaluation.plots import figure_file

DATASET = "Dataset004_Hippocampus"
TASK = "Task04_Hippocampus"


def plot_overlays(predicted: Path, images: Path, path: Path, count: int = 6) -> None:
    """The first ``count`` predictions of the validated task folder over their test
    images: for each, the slice (along the first array axis) where the prediction covers
    most voxels; label 1 red, label 2 yellow."""

    predictions = {
        file.name: sitk.GetArrayFromImage(sitk.ReadImage(file))
        for file in sorted(predicted.glob("*.nii.gz"))[:count]
    }
    with figure_file(path, len(predictions), (2.6 * len(predictions), 3.2)) as axes:
        for axis, (name, prediction) in zip(axes, predictions.items()):
            image = sitk.GetArrayFromImage(sitk.ReadImage(images / name))
            covered = (prediction > 0).reshape(len(prediction), -1).sum(axis=1)
            z = int(np.argmax(covered))
            axis.imshow(image[z], cmap="gray")
            shown = np.ma.masked_equal(prediction[z], 0)
            axis.imshow(shown, cmap="autumn", alpha=0.45, vmin=1, vmax=2)
            axis.set_title(f"{name.split('.')[0]}, slice {z}", fontsize=8)
            axis.axis("off")
        labels = json.loads((images.parent / "dataset.json").read_text())["labels"]
        axes[0].set_title(
            f"{axes[0].get_title()}\nred: {labels['1']}, yellow: {labels['2']}",
            fontsize=8,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--overlays-only", action="store_true")
    args = parser.parse_args()
    environment = work_environment("compare")
    output = WORK / "msd_submission"
    zip_file = output / f"{TASK}.zip"
    images = SHARED_DATA / TASK / "imagesTs"
    overlays = RESULTS / f"msd_hippocampus_{machine()['kind'].lower()}_overlays.png"
    if args.overlays_only:
        plot_overlays(output / TASK, images, overlays)
        return
    if output.exists():
        shutil.rmtree(output)
    python = sys.executable
    run_command([python, "-m", "samnet.cli.compare", DATASET], environment)
    start = time.perf_counter()
    export = [python, "-m", "samnet.cli.export_msd", "-d", DATASET, "--task", TASK]
    export += ["-i", str(images), "-o", str(output)]
    run_command([*export, "--device", args.device], environment)
    seconds = time.perf_counter() - start
    run_command(
        [python, "-m", "samnet.cli.validate_submission", str(zip_file)], environment
    )
    plot_overlays(output / TASK, images, overlays)
    record = json.loads((output / "samnet_submission.json").read_text())
    report = json.loads(
        (
            WORK / "compare" / "results" / DATASET / "samnet_report" / "report.json"
        ).read_text()
    )
    write_result(
        f"msd_hippocampus_{machine()['kind'].lower()}",
        {
            "benchmark": "msd_hippocampus",
            "machine": machine(),
            "best_configuration": report["best_configuration"]["sentence"],
            "postprocessing": report["postprocessing"],
            "submission": record,
            "zip_bytes": zip_file.stat().st_size,
            "validated": "samnet_validate_submission accepted the zip (exit 0)",
            "export_wall_seconds": round(seconds, 1),
        },
    )


if __name__ == "__main__":
    main()
