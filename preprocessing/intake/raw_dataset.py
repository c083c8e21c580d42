"""What every converter shares: the new folder in nnUNet_raw, integer labels and dataset.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from samnet.core.datasets import dataset_folder_name
from samnet.core.errors import SamnetError
from samnet.core.paths import raw_folder

_DATASET_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def raw_dataset_target(number: int, name: str) -> Path:
    """``nnUNet_raw/DatasetNNN_Name``; refuses an id that a dataset of another name already uses."""
    if not 1 <= number <= 999:
        raise SamnetError(
            None,
            f"dataset id {number} is outside 1..999",
            "pass --id with a number from 1 to 999",
        )
    if not _DATASET_NAME.match(name):
        raise SamnetError(
            None,
            f"dataset name '{name}' may only hold letters, digits and underscores",
            "choose a name like Lungs_CXR",
        )
    root = raw_folder()
    folder_name = dataset_folder_name(number, name)
    others = sorted(
        p.name
        for p in root.glob(f"Dataset{number:03d}_*")
        if p.is_dir() and p.name != folder_name
    )
    if others:
        raise SamnetError(
            root / others[0],
            f"dataset id {number} is already used by {', '.join(others)}",
            "pass another --id, or remove that dataset if it is no longer needed",
        )
    return root / folder_name


def integer_labels(values: np.ndarray, path: Path) -> np.ndarray:
    """``values`` as uint8 (uint16 above 255), refusing anything but non-negative whole numbers."""
    if values.dtype == bool:
        return values.astype(np.uint8)
    if values.size == 0:
        return values.astype(np.uint8)
    if not np.issubdtype(values.dtype, np.integer):
        fractional = values[~np.isfinite(values) | (values != np.round(values))]
        if fractional.size:
            raise SamnetError(
                path,
                f"holds non-integer label values (e.g. {fractional.flat[0]:g})",
                "labels must hold class ids 0, 1, 2, ...: re-export this segmentation as an integer image",
            )
    low, high = values.min(), values.max()
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise SamnetError(
            path,
            f"holds label values from {low:g} to {high:g}",
            "labels must hold class ids 0, 1, 2, ...: renumber this segmentation",
        )
    return values.astype(np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16)


def write_dataset_json(
    folder: Path,
    channel_names: list[str],
    labels: dict[str, int],
    num_training: int,
    file_ending: str,
    metadata: dict[str, str] | None = None,
) -> dict:
    """Write nnU-Net v2's ``dataset.json`` into ``folder`` and return its content."""
    description = {
        "channel_names": {str(index): name for index, name in enumerate(channel_names)},
        "labels": labels,
        "numTraining": num_training,
        "file_ending": file_ending,
        **(metadata or {}),
    }
    (folder / "dataset.json").write_text(json.dumps(description, indent=4) + "\n")
    return description
