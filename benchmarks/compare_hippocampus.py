"""SAM vs nnU-Net 2d and 3d_fullres on Task04_Hippocampus, 5 folds, one budget.

    .venv/bin/python benchmarks/compare_hippocampus.py [--epochs 5 --iterations-per-epoch 50 ...]

See ``compare.py``; results in ``benchmarks/results/compare_hippocampus_<cpu|gpu>/``.
"""

from compare import comparison_arguments, run_comparison

# 250 steps per fold and method, of 32 slices (SAM, nnU-Net 2d) or 2 patches of
# 40 x 56 x 40 (nnU-Net 3d_fullres): about 3 hours for all of it on 2 cores.
CPU_DEFAULTS = {
    "epochs": 5,
    "iterations_per_epoch": 50,
    "batch_size": 32,
    "batch_size_3d": 2,
    "configurations": ["2d", "3d_fullres"],
}

if __name__ == "__main__":
    run_comparison(
        "hippocampus", comparison_arguments(__doc__.splitlines()[0], CPU_DEFAULTS)
    )
