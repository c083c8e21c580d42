"""The prompts file of interactive prediction: boxes and clicks per case, class and slice.

A JSON object from case id (as the input folder names it) to a list of prompts::

    {"case_001": [
        {"class": 1, "slice": 12, "box": [x0, y0, x1, y1]},
        {"class": 2, "slice": 12, "points": [[x, y], [x, y]], "point_labels": [1, 0]},
        {"class": 1, "box3d": [x0, y0, z0, x1, y1, z1]}
    ]}

Coordinates are pixel indices of the image array as nnU-Net reads it (``Z x H x W``; a 2D
image has Z = 1 and ``slice`` 0): ``x`` the column, ``y`` the row, ``z``/``slice`` the
slice; boxes end exclusive. ``point_labels`` (1 inside, 0 outside) default to all 1. A 3D
box becomes the same 2D box on each slice from ``z0`` to ``z1 - 1``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samnet.core.errors import SamnetError

FIX = "see the prompts file format in samnet_predict --help and the README"


@dataclass(frozen=True)
class SlicePrompt:
    """One object's prompt on one slice: a box ``[x0, y0, x1, y1]`` and/or clicks."""

    label: int
    slice: int
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] | None = None
    point_labels: tuple[int, ...] | None = None


def load_prompts(
    path: Path, shapes: dict[str, tuple[int, int, int]], labels: set[int]
) -> dict[str, list[SlicePrompt]]:
    """The prompts of ``path`` per case, 3D boxes expanded to slices.

    Arguments:
      shapes: ``Z x H x W`` of each case of the input folder.
      labels: the foreground labels of the model.

    Raises:
      SamnetError: naming the file, the case and entry, what is wrong and the fix, for an
        unreadable file, an unknown case, a class the model does not have, a slice or a
        box or click outside the image, and any malformed entry.
    """
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SamnetError(path, f"cannot be read as JSON ({error})", FIX) from error
    if not isinstance(content, dict):
        raise SamnetError(path, "must hold a JSON object: case id -> prompts", FIX)
    prompts = {}
    for case, entries in content.items():
        if case not in shapes:
            known = ", ".join(sorted(shapes)[:5])
            raise SamnetError(
                path,
                f"case '{case}' is not among the input images ({known}, ...)",
                "use the case ids of the input folder (file names without _0000 and ending)",
            )
        if not isinstance(entries, list):
            raise SamnetError(path, f"case '{case}': prompts must be a list", FIX)
        prompts[case] = [
            prompt
            for index, entry in enumerate(entries)
            for prompt in parse_entry(
                entry, shapes[case], labels, Where(path, case, index)
            )
        ]
    return prompts


@dataclass(frozen=True)
class Where:
    """Which entry of which file an error is about."""

    path: Path
    case: str
    index: int

    def error(self, problem: str, fix: str = FIX) -> SamnetError:
        return SamnetError(
            self.path, f"case '{self.case}', prompt {self.index}: {problem}", fix
        )


def parse_entry(
    entry: Any, shape: tuple[int, int, int], labels: set[int], where: Where
) -> list[SlicePrompt]:
    """One entry of the file -> its slice prompts (several for a 3D box)."""
    depth, height, width = shape
    if not isinstance(entry, dict):
        raise where.error(
            "must be an object with 'class' and a 'box', 'points' or 'box3d'"
        )
    label = entry.get("class")
    if label not in labels:
        raise where.error(
            f"class {label!r} is not a foreground label of the model",
            f"use one of {sorted(labels)} (the labels of its dataset.json)",
        )
    if "box3d" in entry:
        x0, y0, z0, x1, y1, z1 = numbers(entry["box3d"], 6, "box3d", where)
        inside_image([x0, y0, x1, y1], width, height, "box3d", where)
        if not 0 <= z0 < z1 <= depth:
            raise where.error(
                f"box3d spans slices {z0} to {z1}, the image has 0 to {depth}"
            )
        return [
            SlicePrompt(label, z, box=(x0, y0, x1, y1)) for z in range(int(z0), int(z1))
        ]
    if "box" not in entry and "points" not in entry:
        raise where.error("has neither 'box', 'points' nor 'box3d'")
    index = entry.get("slice", 0 if depth == 1 else None)
    if not isinstance(index, int) or not 0 <= index < depth:
        raise where.error(
            f"slice {index!r} is not one of the image's slices 0 to {depth - 1}"
        )
    box = None
    if "box" in entry:
        box = numbers(entry["box"], 4, "box", where)
        inside_image(box, width, height, "box", where)
    points = point_labels = None
    if "points" in entry:
        points, point_labels = clicks(entry, width, height, where)
    return [SlicePrompt(label, index, box, points, point_labels)]


def numbers(value: Any, count: int, name: str, where: Where) -> tuple[float, ...]:
    if not (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, (int, float)) for v in value)
    ):
        raise where.error(f"'{name}' must be a list of {count} numbers, got {value!r}")
    return tuple(float(v) for v in value)


def inside_image(box, width: int, height: int, name: str, where: Where) -> None:
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise where.error(
            f"{name} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is not a box inside the image "
            f"(x from 0 to {width}, y from 0 to {height}, x0 < x1, y0 < y1)"
        )


def clicks(entry: dict, width: int, height: int, where: Where):
    points = entry["points"]
    if not isinstance(points, list) or not points:
        raise where.error("'points' must be a non-empty list of [x, y]")
    parsed = tuple(numbers(point, 2, "points", where) for point in points)
    for x, y in parsed:
        if not (0 <= x < width and 0 <= y < height):
            raise where.error(
                f"point [{x:g}, {y:g}] is outside the image (x below {width}, y below {height})"
            )
    point_labels = entry.get("point_labels", [1] * len(parsed))
    if not (
        isinstance(point_labels, list)
        and len(point_labels) == len(parsed)
        and all(v in (0, 1) for v in point_labels)
    ):
        raise where.error(
            f"'point_labels' must be one 0 (outside) or 1 (inside) per point, got {point_labels!r}"
        )
    return parsed, tuple(point_labels)
