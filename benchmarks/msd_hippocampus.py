"""A Medical Segmentation Decathlon submission for Task04_Hippocampus from the comparison's best model.

    .venv/bin/python benchmarks/msd_hippocampus.py [--device auto]

Runs after ``compare_hippocampus.py`` in its folders (``benchmarks/work/compare/``):
``samnet_compare`` (which determines the best configuration's postprocessing), then
``samnet_export_msd`` on the 52 unlabelled test images, then ``samnet_validate_submission``
on the zip. The submission goes to ``benchmarks/work/msd_submission/`` (predictions are
not committed); what it was made from, its validation and the wall time per case go to
``benchmarks/results/msd_hippocampus_<cpu|gpu>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from common import (
    SHARED_DATA,
    WORK,
    machine,
    run_command,
    work_environment,
    write_result,
)

DATASET = "Dataset004_Hippocampus"
TASK = "Task04_Hippocampus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    environment = work_environment("compare")
    output = WORK / "msd_submission"
    if output.exists():
        shutil.rmtree(output)
    python = sys.executable
    run_command([python, "-m", "samnet.report", DATASET], environment)
    start = time.perf_counter()
    export = [python, "-m", "samnet.msd_export", "-d", DATASET, "--task", TASK]
    export += ["-i", str(SHARED_DATA / TASK / "imagesTs"), "-o", str(output)]
    run_command([*export, "--device", args.device], environment)
    seconds = time.perf_counter() - start
    zip_file = output / f"{TASK}.zip"
    run_command([python, "-m", "samnet.msd_validate", str(zip_file)], environment)
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
