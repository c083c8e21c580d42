"""Check a raw dataset's ``dataset.json`` against nnU-Net v2's rules.

The rules are those of nnU-Net's ``verify_dataset_integrity`` and ``LabelManager``:
required keys, ``"background": 0``, integer and consecutive label values, an ``ignore``
label above all others, and a file ending nnU-Net has a reader for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from samnet.core.errors import SamnetError
from samnet.preprocessing.intake.image_io import NNUNET_FILE_ENDINGS

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
FORMAT_DOCUMENTATION = "nnU-Net's documentation/dataset_format.md"

Report = Callable[[str, str], None]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: the file, what is wrong with it, how to fix it."""

    path: Path
    problem: str
    fix: str

    @classmethod
    def from_error(cls, error: SamnetError) -> Problem:
        return cls(error.path, error.problem, error.fix)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}\n  fix: {self.fix}"


@dataclass(frozen=True)
class DatasetSpec:
    """What ``dataset.json`` declares; None where an entry is missing or unusable."""

    channel_names: tuple[str, ...] | None = None
    # every value a label file may hold, "ignore" included
    label_values: frozenset[int] | None = None
    num_training: int | None = None
    file_ending: str | None = None


def read_dataset_json(path: Path) -> tuple[DatasetSpec, list[Problem]]:
    """Parse ``path`` into a :class:`DatasetSpec`, with every problem found in it."""
    problems: list[Problem] = []

    def report(problem: str, fix: str) -> None:
        problems.append(Problem(path, problem, fix))

    content = _load_json(path, report)
    if content is None:
        return DatasetSpec(), problems
    if "modality" in content and "channel_names" not in content:
        report(
            'is a Medical Segmentation Decathlon dataset.json (it has "modality"), '
            "not nnU-Net v2's",
            "convert the task folder with samnet_convert_msd",
        )
        return DatasetSpec(), problems
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        report(
            f"lacks the required key(s) {', '.join(missing)}",
            f"add them, as described in {FORMAT_DOCUMENTATION}",
        )
    parsers = {
        "channel_names": _parse_channel_names,
        "labels": _parse_labels,
        "numTraining": _parse_num_training,
        "file_ending": _parse_file_ending,
    }
    parsed = {
        key: parse(content[key], report)
        for key, parse in parsers.items()
        if key in content
    }
    spec = DatasetSpec(
        channel_names=parsed.get("channel_names"),
        label_values=parsed.get("labels"),
        num_training=parsed.get("numTraining"),
        file_ending=parsed.get("file_ending"),
    )
    return spec, problems


def _load_json(path: Path, report: Report) -> dict | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report(
            "is missing",
            "write it with channel_names, labels, numTraining and file_ending "
            f"({FORMAT_DOCUMENTATION}), or create the dataset with samnet_convert_msd "
            "or samnet_convert_2d",
        )
        return None
    except json.JSONDecodeError as error:
        report(
            f"is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}",
            "fix the syntax there (often a trailing comma or a missing quote or brace)",
        )
        return None
    except (OSError, UnicodeDecodeError) as error:
        report(f"cannot be read ({error})", "make it a readable UTF-8 text file")
        return None
    if not isinstance(content, dict):
        report(
            f"holds a JSON {type(content).__name__}, not an object",
            f"make it one object with the keys {', '.join(REQUIRED_KEYS)}",
        )
        return None
    return content


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_channel_names(value: object, report: Report) -> tuple[str, ...] | None:
    if not isinstance(value, dict) or not value:
        report(
            f"channel_names is {value!r}, not a mapping of channel indices to names",
            'write one entry per image channel, e.g. {"0": "T1", "1": "T2"}',
        )
        return None
    expected_keys = [str(index) for index in range(len(value))]
    if sorted(value) != expected_keys:
        report(
            f"channel_names keys are {list(value)}, not {expected_keys}",
            'number the channels "0", "1", ... without gaps: '
            "key N names the files CASE_000N",
        )
    return tuple(str(name) for name in value.values())


def _parse_labels(value: object, report: Report) -> frozenset[int] | None:
    """All allowed label values, or None when some are not integers."""
    if not isinstance(value, dict) or not value:
        report(
            f"labels is {value!r}, not a mapping of label names to values",
            'write e.g. {"background": 0, "tumour": 1}',
        )
        return None
    members_by_name: dict[str, list[int]] = {}
    for name, label in value.items():
        # a list of values is a region, for nnU-Net's region-based training
        members = label if isinstance(label, list) else [label]
        if members and all(_is_integer(member) for member in members):
            members_by_name[name] = members
        else:
            report(
                f"label {name!r} has the value {label!r}, which is not an integer",
                'map each label name to a whole number: {"background": 0, "tumour": 1}',
            )
    if "background" not in value:
        report(
            'labels have no "background" entry',
            'add "background": 0; nnU-Net reserves the value 0 for background',
        )
    elif "background" in members_by_name and value["background"] != 0:
        report(
            f'"background" has the value {value["background"]!r}; nnU-Net requires 0',
            'set "background": 0 and renumber the label files to match',
        )
    others = [
        member
        for name, members in members_by_name.items()
        if name != "ignore"
        for member in members
    ]
    if "ignore" in members_by_name and not (
        _is_integer(value["ignore"]) and value["ignore"] > max(others, default=-1)
    ):
        report(
            f'the "ignore" label {value["ignore"]!r} is not one integer above all others',
            'give "ignore" one integer value, the highest of all labels',
        )
    values = sorted({m for members in members_by_name.values() for m in members})
    if values and values != list(range(values[0], values[0] + len(values))):
        report(
            f"label values {values} are not consecutive; nnU-Net requires 0, 1, 2, ... "
            "without gaps",
            f"renumber them to {list(range(len(values)))} in dataset.json and in every "
            "label file",
        )
    return frozenset(values) if len(members_by_name) == len(value) else None


def _parse_num_training(value: object, report: Report) -> int | None:
    if _is_integer(value) and value >= 0:
        return value
    report(
        f"numTraining is {value!r}, not a whole number",
        "set it to the number of training cases (label files in labelsTr)",
    )
    return None


def _parse_file_ending(value: object, report: Report) -> str | None:
    if isinstance(value, str) and value.lower() in NNUNET_FILE_ENDINGS:
        return value
    report(
        f"file_ending is {value!r}, which nnU-Net cannot read; files were not checked",
        f"convert images and labels to one of {', '.join(NNUNET_FILE_ENDINGS)} "
        "(.nii.gz for 3D, .png for 2D) and set file_ending to match",
    )
    return None
