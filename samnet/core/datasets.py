"""Find nnU-Net datasets by id or name (``4``, ``004``, ``Dataset004``, ``Dataset004_Hippocampus``)."""

from __future__ import annotations

import re
from pathlib import Path

from samnet.core.errors import SamnetError
from samnet.core.paths import raw_folder

_DATASET_PATTERN = re.compile(r"^(?:Dataset)?(\d{1,3})(?:_(\w+))?$")


def dataset_id(identifier: str | int) -> int:
    """Parse ``4``, ``"004"``, ``"Dataset004"`` or ``"Dataset004_Name"`` into 4."""
    match = _DATASET_PATTERN.match(str(identifier))
    if not match:
        raise SamnetError(
            None,
            f"'{identifier}' is not a dataset identifier",
            "give a number (4), DatasetNNN (Dataset004) or the full name (Dataset004_Hippocampus)",
        )
    return int(match.group(1))


def dataset_folder_name(number: int, name: str) -> str:
    return f"Dataset{number:03d}_{name}"


def find_raw_dataset(identifier: str | int) -> Path:
    """The raw folder of a dataset; a clear error when it is missing or ambiguous."""
    number = dataset_id(identifier)
    root = raw_folder()
    matches = sorted(root.glob(f"Dataset{number:03d}_*"))
    matches = [m for m in matches if m.is_dir() and not m.name.startswith(".")]
    if not matches:
        raise SamnetError(
            root,
            f"no dataset with id {number} (looked for Dataset{number:03d}_* here)",
            "convert one first (samnet_convert_msd, samnet_convert_2d, samnet_demo_dataset) "
            "or point nnUNet_raw at the folder that holds it",
        )
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches)
        raise SamnetError(
            root,
            f"several datasets share id {number}: {names}",
            "rename or remove all but one",
        )
    return matches[0]
