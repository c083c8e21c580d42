"""The pieces a report is made of, independent of format, and how numbers are written in them.

``samnet.evaluation.document`` builds the report from these; ``samnet.evaluation.render``
turns them into Markdown and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from samnet.evaluation.stats import FOREGROUND, class_title

# Report key -> what tables call the metric.
METRIC_TITLES = {"dice": "Dice", "iou": "IoU", "nsd": "NSD", "hd95": "HD95 (mm)"}


@dataclass(frozen=True)
class Named:
    """A method in a table: its title, with nnU-Net's identifier beside it in smaller type."""

    title: str
    identifier: str


Cell = str | Named


@dataclass(frozen=True)
class Paragraph:
    title: str
    text: str


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""
    # Long tables (one row per case) are folded away in the HTML page.
    collapsed: bool = False
    # How many leading columns hold words (left-aligned); the rest hold numbers.
    text_columns: int = 1


@dataclass(frozen=True)
class Figure:
    title: str
    file_name: str
    notes: list[str] = field(default_factory=list)


Section = Paragraph | Table | Figure

# Written where a value is undefined or was not computed.
MISSING = "—"


def number(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def mean_sd(stat: dict, digits: int = 4) -> str:
    """``mean ± sd`` of ``mean_and_sd``; an em dash where nothing is defined."""
    if stat["mean"] is None:
        return MISSING
    if stat["sd"] is None:
        return number(stat["mean"], digits)
    return f"{number(stat['mean'], digits)} ± {number(stat['sd'], digits)}"


def named_once(rows: list[list[Cell]]) -> list[list[Cell]]:
    """``rows`` with the leading method cell left blank where the row above names it too.

    A table with a row per method and fold then names each method once, on its first row.
    """
    return [
        ["", *row[1:]] if index and rows[index - 1][0] == row[0] else row
        for index, row in enumerate(rows)
    ]


def p_value(p: float | None) -> str:
    return MISSING if p is None else f"{p:.4g}"


def class_keys(report: dict) -> list[str]:
    return [*report["labels"], FOREGROUND]


def class_columns(report: dict) -> list[str]:
    return [class_title(report["labels"], key) for key in class_keys(report)]
