"""SAM vs nnU-Net 2d on the CXR_Lungs chest X-rays, 5 folds, one budget.

    .venv/bin/python benchmarks/compare_cxr.py [--configurations 2d 2d_lowres ...]

See ``compare.py``; results in ``benchmarks/results/compare_cxr_<cpu|gpu>/``.

The baseline on CPU is ``2d_lowres``: nnU-Net's 2d U-Net planned by nnU-Net at the
spacing SAM sees (3.9 px per pixel, slices ~224 x 256), scored at full resolution like
SAM. nnU-Net's native 2d plan has patches of 896 x 1024, 16x the pixels: scaling the
measured Hippocampus 2d step (0.65 s for 32 x 56 x 40 px) by pixels, ~2.5 s per step of 4
at 2d_lowres (measured: 2.6-3.2 s) and ~40 s at native 2d, which would make the 5 folds
~14 h. On a GPU, add ``--configurations 2d 2d_lowres``.

Measured on 2 CPU cores: 89.5 min in all (conversion, planning, preprocessing, embedding
cache 3 min; SAM 3 min of training and 1 min of validation a fold; nnU-Net 2d_lowres
11-13 min of training and 1 min of validation a fold).
"""

from compare import comparison_arguments, run_comparison

CPU_DEFAULTS = {
    "epochs": 5,
    "iterations_per_epoch": 50,
    "batch_size": 4,
    "configurations": ["2d_lowres"],
}

if __name__ == "__main__":
    run_comparison("cxr", comparison_arguments(__doc__.splitlines()[0], CPU_DEFAULTS))
