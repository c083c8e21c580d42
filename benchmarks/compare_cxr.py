"""SAM vs nnU-Net 2d on the CXR_Lungs chest X-rays, 5 folds, one budget.

    .venv/bin/python benchmarks/compare_cxr.py [--epochs 5 --iterations-per-epoch 50 ...]

See ``compare.py``; results in ``benchmarks/results/compare_cxr_<cpu|gpu>/``.
"""

from common import SHARED_DATA
from compare import comparison_arguments, run_comparison

DATASET_ID = 501
CPU_DEFAULTS = {
    "epochs": 5,
    "iterations_per_epoch": 50,
    "batch_size": 16,
    "configurations": ["2d"],
}

if __name__ == "__main__":
    data = SHARED_DATA / "CXR_Lungs"
    convert = ["samnet.preprocessing.convert_2d", "--images", str(data / "images")]
    convert += ["--labels", str(data / "labels"), "--name", "CXRLungs"]
    convert += ["--id", str(DATASET_ID), "--modality", "X-ray"]
    convert += ["--label-names", "background,right_lung,left_lung"]
    run_comparison(
        "cxr",
        f"Dataset{DATASET_ID:03d}_CXRLungs",
        convert,
        comparison_arguments(__doc__.splitlines()[0], CPU_DEFAULTS),
    )
