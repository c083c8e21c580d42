"""Check an nnU-Net v2 raw dataset and report every problem at once, each with its fix.

The checker only reads: it never writes, moves or deletes anything in the dataset.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from samnet.preprocessing.checks.case import case_problems
from samnet.preprocessing.checks.dataset_json import Problem, read_dataset_json

__all__ = ["Problem", "check_dataset", "dataset_summary"]


def check_dataset(
    folder: Path, read_pixels: bool = True, progress: bool = False
) -> list[Problem]:
    """Every problem in the raw dataset ``folder``; an empty list means nnU-Net can use it.

    ``read_pixels=False`` checks names, channels and geometry from file headers only,
    skipping NaN/Inf intensities, label values and truncated data.
    """
    folder = Path(folder)
    spec, problems = read_dataset_json(folder / "dataset.json")
    if spec.file_ending is None:
        return problems
    ending = spec.file_ending
    training_images = _image_files(folder / "imagesTr", ending, problems, required=True)
    labels = _label_files(folder / "labelsTr", ending, problems)
    test_images = _image_files(folder / "imagesTs", ending, problems, required=False)

    training_cases = sorted(training_images.keys() | labels.keys())
    if spec.num_training is not None and spec.num_training != len(training_cases):
        problems.append(
            Problem(
                folder / "dataset.json",
                f"numTraining is {spec.num_training}, but imagesTr and labelsTr hold "
                f"{len(training_cases)} training cases",
                f'set "numTraining": {len(training_cases)}, or add the missing cases',
            )
        )
    # a missing folder is reported once above, not once per case
    if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
        for case in training_cases:
            problems += _pairing_problems(
                folder, case, training_images.get(case, {}), labels.get(case), ending
            )

    cases = [
        (case, training_images.get(case, {}), labels.get(case))
        for case in training_cases
    ]
    cases += [
        (case, channel_files, None)
        for case, channel_files in sorted(test_images.items())
    ]
    for case, channel_files, label in tqdm(
        cases, desc=folder.name, unit="case", file=sys.stderr, disable=not progress
    ):
        problems += case_problems(case, channel_files, label, spec, read_pixels)
    return problems


def _image_files(
    folder: Path, ending: str, problems: list[Problem], required: bool
) -> dict[str, dict[int, Path]]:
    """Image files by case and channel index: ``{"case_000": {0: .../case_000_0000.nii.gz}}``."""
    pattern = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending))
    expected = f"CASE_XXXX{ending} (XXXX: the 4-digit channel index)"
    cases: dict[str, dict[int, Path]] = {}
    for path in _folder_entries(folder, ending, expected, problems, required):
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            cases.setdefault(match["case"], {})[int(match["channel"])] = path
        else:
            problems.append(_unexpected_entry(path, expected))
    return cases


def _label_files(folder: Path, ending: str, problems: list[Problem]) -> dict[str, Path]:
    """Label files by case: ``{"case_000": .../case_000.nii.gz}``."""
    expected = f"CASE{ending}"
    labels: dict[str, Path] = {}
    for path in _folder_entries(folder, ending, expected, problems, required=True):
        if path.name.endswith(ending) and path.name != ending and path.is_file():
            labels[path.name[: -len(ending)]] = path
        else:
            problems.append(_unexpected_entry(path, expected))
    return labels


def _folder_entries(
    folder: Path, ending: str, expected: str, problems: list[Problem], required: bool
) -> list[Path]:
    if not folder.is_dir():
        if required:
            problems.append(
                Problem(
                    folder,
                    f"is missing; it must hold files named {expected}",
                    "create it",
                )
            )
        return []
    # Hidden clutter (.DS_Store) is invisible to nnU-Net, unless it ends like a dataset
    # file (macOS's ._case_000_0000.nii.gz), in which case nnU-Net would read it as a case.
    return [
        path
        for path in sorted(folder.iterdir())
        if not path.name.startswith(".") or path.name.endswith(ending)
    ]


def _unexpected_entry(path: Path, expected: str) -> Problem:
    kind = "folder" if path.is_dir() else "file"
    return Problem(
        path,
        f"unexpected {kind}: {path.parent.name} holds only files named {expected}",
        f"rename it to that pattern, or move it out of {path.parent.name}",
    )


def _pairing_problems(
    folder: Path,
    case: str,
    channel_files: dict[int, Path],
    label: Path | None,
    ending: str,
) -> Iterator[Problem]:
    """A training case needs both images and a label."""
    if label is None:
        yield Problem(
            folder / "labelsTr" / f"{case}{ending}",
            f"missing label of training case {case}",
            f"add the label file, or move {case}'s images to imagesTs if it has none",
        )
    if not channel_files:
        yield Problem(
            label,
            f"no image for this label: imagesTr has no {case}_0000{ending}",
            f"add the images as imagesTr/{case}_XXXX{ending}, or remove the label",
        )


def dataset_summary(folder: Path) -> str:
    """Cases, channels and labels of a raw dataset that passed the check, in one line."""
    spec, _ = read_dataset_json(folder / "dataset.json")
    test_cases = _image_files(folder / "imagesTs", spec.file_ending, [], required=False)
    return (
        f"{spec.num_training} training and {len(test_cases)} test cases, "
        f"channels {', '.join(spec.channel_names)}, labels {sorted(spec.label_values)}"
    )
