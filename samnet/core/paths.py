"""nnU-Net's folders and CPU-safe process settings, set before nnunetv2 is imported.

nnunetv2 reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` once,
at import time, so :func:`configure_environment` must run before any nnunetv2 import.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

NNUNET_FOLDERS = {
    "nnUNet_raw": "raw",
    "nnUNet_preprocessed": "preprocessed",
    "nnUNet_results": "results",
}
DEFAULT_ROOT = Path("samnet_data")

# nnU-Net's defaults (8 and 12 worker processes) oversubscribe a small CPU machine;
# 0 breaks planning (torch.set_num_threads(0)), so never go below 1.
DEFAULT_PROCESSES = str(max(1, min(2, os.cpu_count() or 1)))

_announced = False


def configure_environment() -> dict[str, Path]:
    """Fill unset nnU-Net variables with defaults under ``./samnet_data`` and return the folders.

    Also flushes denormal floats to zero (``samnet.core.cpu_numerics``): every samnet command
    calls this before its first torch operation, as that setting needs.

    Says once, on stderr, which defaults it chose.
    """
    # imports torch: kept out of this module's import, which commands do before --help
    from samnet.core.cpu_numerics import flush_denormals

    global _announced
    chosen = []
    for variable, sub in NNUNET_FOLDERS.items():
        if not os.environ.get(variable):
            os.environ[variable] = str((DEFAULT_ROOT / sub).resolve())
            chosen.append(variable)
    for variable in ("nnUNet_def_n_proc", "nnUNet_n_proc_DA"):
        os.environ.setdefault(variable, DEFAULT_PROCESSES)
    flush_denormals()
    register_trainers()
    if chosen and not _announced:
        names = ", ".join(chosen)
        print(
            f"samnet: {names} not set; using {DEFAULT_ROOT.resolve()}/{{raw,preprocessed,results}}",
            file=sys.stderr,
        )
        _announced = True
    folders = {variable: Path(os.environ[variable]) for variable in NNUNET_FOLDERS}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def trainer_lookup_folder() -> Path:
    """The folder of samnet's trainers for nnU-Net's ``-tr`` (``samnet.trainers.nnunet_lookup``)."""
    spec = importlib.util.find_spec("samnet.trainers.nnunet_lookup")
    return Path(next(iter(spec.submodule_search_locations)))


def register_trainers() -> None:
    """Add samnet's trainer folder to ``nnUNet_extTrainer``.

    nnU-Net (from 2.8.0) searches these folders for a ``-tr`` trainer it does not ship, at
    each lookup, for training and prediction alike
    (``nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name``).
    """
    folder = str(trainer_lookup_folder())
    paths = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder not in paths:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*paths, folder])


def raw_folder() -> Path:
    return configure_environment()["nnUNet_raw"]


def preprocessed_folder() -> Path:
    return configure_environment()["nnUNet_preprocessed"]


def results_folder() -> Path:
    return configure_environment()["nnUNet_results"]
