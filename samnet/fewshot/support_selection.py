"""The support set: which K labelled 2D slices prompt the few-shot network, per fold.

Slices are numbered along the plan's slicing axis of the image as nnU-Net reads it (the
axis nnU-Net's 2d configuration slices; 0 for 2D images): what a user sees in a viewer
that shows nnU-Net's array order. nnU-Net's preprocessing crops each case to its non-zero
region, so inside samnet a slice is ``index`` = slice - the crop's start on that axis.

A support set comes from a file the user wrote (``read_support_file``: JSON or CSV of
case, slice) or is chosen automatically (``select_support``). Either way it is checked
against a fold (``resolve_support``): only the fold's training cases may be used, since a
validation case's labels in the prompts would leak into its own evaluation.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samnet.core.errors import SamnetError

# From K = 5, one support slice in 5 shows no foreground: the decoder otherwise only ever
# sees every class present and marks structures on slices that have none (on the demo
# dataset, half of the false positives of K = 5 all-foreground slices lay on empty ones).
NEGATIVE_EVERY = 5
FILE_FIX = (
    'write a JSON list like [{"case": "hippocampus_001", "slice": 17}, ...] or a CSV '
    "with the header case,slice (slice may be omitted for 2D images)"
)


@dataclass(frozen=True)
class SupportSlice:
    """One labelled slice: ``case`` id and ``slice`` number (see the module docstring)."""

    case: str
    slice: int


@dataclass(frozen=True)
class ResolvedSlice:
    """A support slice located in nnU-Net's preprocessed case.

    Attributes:
      case, slice: as the user names it.
      index: the slice in the preprocessed array (axis 0 of ``C x Z x H x W``).
    """

    case: str
    slice: int
    index: int


def read_support_file(path: str | Path) -> tuple[SupportSlice, ...]:
    """The slices a support file lists, in file order.

    JSON: a list of ``{"case": ..., "slice": ...}`` objects or ``[case, slice]`` pairs.
    CSV: a header with ``case`` and (optionally) ``slice``. A missing slice means 0 (2D
    images). Raises ``SamnetError`` naming the file and the entry for anything else:
    unreadable, empty, malformed entries, negative slices, repeated slices.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SamnetError(
            path, f"support file cannot be read ({error.strerror})", FILE_FIX
        ) from None
    entries = _csv_entries(path, text) if path.suffix.lower() == ".csv" else None
    if entries is None:
        entries = _json_entries(path, text)
    slices = tuple(_support_slice(path, number, entry) for number, entry in entries)
    if not slices:
        raise SamnetError(path, "the support file lists no slices", FILE_FIX)
    repeated = sorted({s for s in slices if slices.count(s) > 1}, key=str)
    if repeated:
        raise SamnetError(
            path,
            f"lists {', '.join(f'{s.case} slice {s.slice}' for s in repeated)} more than once",
            "list each slice once",
        )
    return slices


def _json_entries(path: Path, text: str) -> list[tuple[int, object]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SamnetError(path, f"is not valid JSON ({error})", FILE_FIX) from None
    if not isinstance(data, list):
        raise SamnetError(path, "holds no JSON list of slices", FILE_FIX)
    return list(enumerate(data, start=1))


def _csv_entries(path: Path, text: str) -> list[tuple[int, object]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "case" not in reader.fieldnames:
        raise SamnetError(
            path, f"has no 'case' column (header: {reader.fieldnames})", FILE_FIX
        )
    return [(line, row) for line, row in enumerate(reader, start=2)]


def _support_slice(path: Path, number: int, entry: object) -> SupportSlice:
    """One JSON/CSV entry as a ``SupportSlice``; ``number`` names it in errors."""
    if isinstance(entry, list | tuple) and len(entry) in (1, 2):
        entry = dict(zip(("case", "slice"), entry))
    if not isinstance(entry, dict) or not entry.get("case"):
        raise SamnetError(path, f"entry {number} ({entry!r}) names no case", FILE_FIX)
    value = entry.get("slice")
    value = 0 if value in (None, "") else value
    try:
        index = int(value)
        valid = float(value) == index and index >= 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise SamnetError(
            path,
            f"entry {number}: slice {value!r} of case {entry['case']} is not a "
            "non-negative integer",
            FILE_FIX,
        )
    return SupportSlice(str(entry["case"]), index)


def select_support(
    class_areas: Mapping[str, np.ndarray],
    shots: int,
    seed: int,
    at_most_available: bool = False,
) -> list[tuple[str, int]]:
    """K slices spread over cases and over each case's labelled extent, classes covered.

    Arguments:
      class_areas: for each candidate case (a fold's training cases), ``Z x C`` pixels
        of each foreground class in each slice (axis 0 of the preprocessed case).
      shots: K, the number of slices.
      seed: makes the choice reproducible; another seed, another support set.
      at_most_available: when the cases label fewer slices than K asks for, take all of
        them instead of refusing (nnU-Net's 10K baseline on a small dataset).

    Returns:
      ``(case, index)`` pairs, in the order chosen.

    K // 5 of the slices show no foreground (when the cases have such slices, see
    ``NEGATIVE_EVERY``); the others do. Cases are taken in a seeded random order, but a
    case that shows a class no chosen case shows yet goes first, until enough cases are
    chosen for one slice each (all cases when there are fewer). Their slices with
    foreground are dealt round-robin; the n slices of one case aim at n evenly spaced
    positions over its labelled extent along the slicing axis (middle ones first), each
    preferring a slice that shows classes no chosen slice shows yet, then the one
    nearest its position. The empty slices are those nearest the chosen cases' labelled
    extents (gaps inside them, then just before or after them: where a structure
    ends), one case at a time.

    Raises ``SamnetError`` when fewer than K labelled slices exist or some class
    present in the cases ends up in none of the K slices (K too small to cover them).
    """
    rng = np.random.default_rng(seed)
    cases = [case for case in sorted(class_areas) if class_areas[case].any()]
    available = sum(int(class_areas[c].any(axis=1).sum()) for c in cases)
    empty = sum(int((~class_areas[c].any(axis=1)).sum()) for c in cases)
    negatives = min(shots // NEGATIVE_EVERY, empty)
    if at_most_available:
        shots = negatives + min(shots - negatives, available)
    if shots - negatives > available:
        raise SamnetError(
            None,
            f"--few-shot {shots} asks for more slices than the fold's training cases "
            f"label ({available} slices show foreground)",
            f"use --few-shot {available} or fewer",
        )
    order = [cases[i] for i in rng.permutation(len(cases))]
    positives = shots - negatives
    chosen_cases = _choose_cases(class_areas, order, min(positives, len(order)))
    picks = _deal(class_areas, chosen_cases, positives)
    classes = next(iter(class_areas.values())).shape[1]
    covered = np.zeros(classes, dtype=bool)
    chosen: list[tuple[str, int]] = []
    for case in chosen_cases:
        present = class_areas[case] > 0
        labelled = np.flatnonzero(present.any(axis=1))
        first, last = labelled[0], labelled[-1]
        count = picks[case]
        targets = first + (np.arange(count) + 0.5) / count * (last - first + 1) - 0.5
        # Middle targets first: they are the likeliest to find every class, which leaves
        # the outer targets free to spread.
        for target in sorted(targets, key=lambda t: abs(t - (first + last) / 2)):
            free = [z for z in labelled if (case, int(z)) not in chosen]
            z = max(
                free,
                key=lambda z: (
                    np.count_nonzero(present[z] & ~covered),
                    -abs(z - target),
                ),
            )
            covered |= present[z]
            chosen.append((case, int(z)))
    _require_coverage(class_areas, cases, covered, shots)
    others = [case for case in order if case not in chosen_cases]
    return chosen + _empty_slices(class_areas, chosen_cases + others, negatives)


def _empty_slices(
    class_areas: Mapping[str, np.ndarray], cases: list[str], count: int
) -> list[tuple[str, int]]:
    """``count`` slices without foreground, nearest the labelled extent of ``cases``,
    one case at a time (round-robin, in order)."""
    queues = {}
    for case in cases:
        labelled = class_areas[case].any(axis=1)
        first, last = np.flatnonzero(labelled)[[0, -1]]
        empty = np.flatnonzero(~labelled)
        distance = np.maximum(first - empty, empty - last)
        queues[case] = [int(z) for z in empty[np.argsort(distance, kind="stable")]]
    chosen: list[tuple[str, int]] = []
    while len(chosen) < count:
        for case in cases:
            if queues[case] and len(chosen) < count:
                chosen.append((case, queues[case].pop(0)))
    return chosen


def _choose_cases(
    class_areas: Mapping[str, np.ndarray], order: list[str], count: int
) -> list[str]:
    """``count`` cases from ``order``, one showing not yet covered classes first."""
    remaining, chosen = list(order), []
    covered = np.zeros(next(iter(class_areas.values())).shape[1], dtype=bool)
    for _ in range(count):
        gains = [
            np.count_nonzero(class_areas[c].any(axis=0) & ~covered) for c in remaining
        ]
        case = remaining.pop(int(np.argmax(gains)))
        covered |= class_areas[case].any(axis=0)
        chosen.append(case)
    return chosen


def _deal(
    class_areas: Mapping[str, np.ndarray], cases: list[str], shots: int
) -> dict[str, int]:
    """Slices per case: round-robin, no case given more than its labelled slices."""
    room = {case: int(class_areas[case].any(axis=1).sum()) for case in cases}
    picks = dict.fromkeys(cases, 0)
    while sum(picks.values()) < shots:
        for case in cases:
            if picks[case] < room[case] and sum(picks.values()) < shots:
                picks[case] += 1
    return picks


def _require_coverage(
    class_areas: Mapping[str, np.ndarray],
    cases: Sequence[str],
    covered: np.ndarray,
    shots: int,
) -> None:
    present = np.zeros_like(covered)
    for case in cases:
        present |= class_areas[case].any(axis=0)
    missing = np.flatnonzero(present & ~covered) + 1
    if len(missing):
        raise SamnetError(
            None,
            f"the {shots} automatically chosen support slices show no label "
            f"{', '.join(map(str, missing))}: the network could not segment it",
            "raise --few-shot, or list slices that show every class with --support FILE",
        )


def resolve_support(
    support: Sequence[SupportSlice],
    training_cases: Sequence[str],
    validation_cases: Sequence[str],
    crops: Mapping[str, tuple[int, int, int]],
    source: str | Path | None = None,
) -> list[ResolvedSlice]:
    """The user's support slices checked against a fold and located in the preprocessed data.

    Arguments:
      support: the slices (``read_support_file``).
      training_cases, validation_cases: the fold's split.
      crops: per training case, ``(slices before cropping, crop start, crop stop)`` on the
        slicing axis (nnU-Net's ``shape_before_cropping`` and ``bbox_used_for_cropping``).
      source: the support file, named in errors.

    Raises ``SamnetError`` for a validation case of this fold (its labels would leak into
    its own evaluation), an unknown case, or a slice outside the image or outside the
    non-zero region nnU-Net's preprocessing kept.
    """
    training, validation = set(training_cases), set(validation_cases)
    resolved = []
    for entry in support:
        if entry.case in validation:
            raise SamnetError(
                source,
                f"case {entry.case} is a validation case of this fold: prompting with its "
                "labels would leak them into its own evaluation",
                "choose support slices from the fold's training cases "
                "(splits_final.json in the dataset's preprocessed folder), or train "
                "the folds that do not validate this case",
            )
        if entry.case not in training:
            raise SamnetError(
                source,
                f"case {entry.case} is not a labelled case of this dataset",
                f"use the case ids of labelsTr, e.g. {', '.join(sorted(training)[:3])}",
            )
        slices, start, stop = crops[entry.case]
        if not 0 <= entry.slice < slices:
            raise SamnetError(
                source,
                f"slice {entry.slice} of case {entry.case} is outside the image "
                f"(slices 0..{slices - 1} along the slicing axis)",
                f"choose a slice from 0 to {slices - 1}",
            )
        if not start <= entry.slice < stop:
            raise SamnetError(
                source,
                f"slice {entry.slice} of case {entry.case} is empty: nnU-Net's "
                f"preprocessing keeps only the non-zero slices {start}..{stop - 1}",
                f"choose a slice from {start} to {stop - 1}",
            )
        resolved.append(ResolvedSlice(entry.case, entry.slice, entry.slice - start))
    return resolved
