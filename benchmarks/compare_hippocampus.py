"""SAM vs nnU-Net 2d and 3d_fullres on Task04_Hippocampus, 5 folds, one budget.

    .venv/bin/python benchmarks/compare_hippocampus.py [--epochs 5 --iterations-per-epoch 50 ...]

See ``compare.py``; results in ``benchmarks/results/compare_hippocampus_<cpu|gpu>/``.
"""

from common import SHARED_DATA
from compare import comparison_arguments, run_comparison

# 250 steps of 32 slices per fold and method: about two hours for all of it on 2 cores.
CPU_DEFAULTS = {
    "epochs": 5,
    "iterations_per_epoch": 50,
    "batch_size": 32,
    "configurations": ["2d", "3d_fullres"],
}

if __name__ == "__main__":
    run_comparison(
        "hippocampus",
        "Dataset004_Hippocampus",
        ["samnet.preprocessing.convert_msd", str(SHARED_DATA / "Task04_Hippocampus")],
        comparison_arguments(__doc__.splitlines()[0], CPU_DEFAULTS),
    )
