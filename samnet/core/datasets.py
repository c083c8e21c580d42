"""nnU-Net datasets by id or name (``4``, ``004``, ``Dataset004``, ``Dataset004_Hippocampus``),
resolved once into a :class:`Dataset` that knows its folders."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from samnet.core.errors import SamnetError
from samnet.core.layout import SAM_PLANS
from samnet.core.paths import preprocessed_folder, raw_folder, results_folder

_DATASET_PATTERN = re.compile(r"^(?:Dataset)?(\d{1,3})(?:_(\w+))?$")


@dataclass(frozen=True)
class Dataset:
    """One nnU-Net dataset: its id, its folder name and its three folders."""

    id: int
    name: str

    @classmethod
    def resolve(cls, identifier: str | int) -> Dataset:
        """The dataset in ``nnUNet_raw`` that ``identifier`` names; a clear error when it is
        missing or ambiguous."""
        raw = find_raw_dataset(identifier)
        return cls(dataset_id(raw.name), raw.name)

    @property
    def raw(self) -> Path:
        return raw_folder() / self.name

    @property
    def preprocessed(self) -> Path:
        return preprocessed_folder() / self.name

    @property
    def results(self) -> Path:
        return results_folder() / self.name

    def plans_file(self, plans_identifier: str = SAM_PLANS) -> Path:
        return self.preprocessed / f"{plans_identifier}.json"


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
