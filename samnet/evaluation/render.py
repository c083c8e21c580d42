"""The report's sections as Markdown, and as one self-contained HTML page.

The HTML page needs no other file and no network: the figures are embedded as base64
``data:`` URIs and the style sits in the page.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from samnet.evaluation.sections import Cell, Figure, Named, Paragraph, Section, Table

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th.text, td.text { text-align: left; }
.id { color: #666; font-size: 0.8em; word-break: break-all; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
"""


def markdown_cell(cell: Cell) -> str:
    if isinstance(cell, Named):
        return f"{cell.title} (`{cell.identifier}`)"
    return cell


def markdown_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(markdown_cell(cell) for cell in row) + " |"
        for row in table.rows
    ]
    return lines


def markdown_section(section: Section) -> list[str]:
    lines = [f"## {section.title}", ""]
    if isinstance(section, Paragraph):
        return lines + [section.text, ""]
    if isinstance(section, Table):
        note = [section.note, ""] if section.note else []
        return lines + note + markdown_table(section) + [""]
    notes = [f"- {note}" for note in section.notes]
    return lines + [
        f"![{section.title}]({section.file_name})",
        "",
        *notes,
        *([""] if notes else []),
    ]


def markdown(dataset: str, sections: list[Section]) -> str:
    """The report as Markdown; figures are linked as the PNG files beside it."""
    lines = [f"# samnet report: {dataset}", ""]
    for section in sections:
        lines += markdown_section(section)
    return "\n".join(lines)


def html_cell(cell: Cell) -> str:
    """A cell's content; a method's identifier goes below its title, smaller."""
    if isinstance(cell, Named):
        return (
            f'{escape(cell.title)}<br><span class="id">{escape(cell.identifier)}</span>'
        )
    return escape(cell)


def html_table(table: Table) -> str:
    """The table; its leading ``text_columns`` are left-aligned, the numbers right-aligned."""

    def aligned(index: int) -> str:
        return ' class="text"' if index < table.text_columns else ""

    header = "".join(
        f"<th{aligned(i)}>{escape(column)}</th>"
        for i, column in enumerate(table.columns)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{aligned(i)}>{html_cell(cell)}</td>" for i, cell in enumerate(row)
        )
        + "</tr>\n"
        for row in table.rows
    )
    rendered = (
        f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"
    )
    if table.collapsed:
        return f"<details><summary>{len(table.rows)} rows</summary>\n{rendered}\n</details>"
    return rendered


def html_section(section: Section, folder: Path) -> str:
    parts = [f"<h2>{escape(section.title)}</h2>"]
    if isinstance(section, Paragraph):
        parts.append(f"<p>{escape(section.text)}</p>")
    elif isinstance(section, Table):
        if section.note:
            parts.append(f'<p class="note">{escape(section.note)}</p>')
        parts.append(html_table(section))
    elif isinstance(section, Figure):
        encoded = base64.b64encode((folder / section.file_name).read_bytes()).decode(
            "ascii"
        )
        parts.append(
            f'<img alt="{escape(section.title)}" src="data:image/png;base64,{encoded}">'
        )
        parts += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
    return "\n".join(parts)


def html(dataset: str, sections: list[Section], folder: Path) -> str:
    """The report as one HTML page; the figures are read from ``folder`` and embedded."""
    title = f"samnet report: {escape(dataset)}"
    body = "\n".join(html_section(section, folder) for section in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
    )
