"""``samnet_compare``: write the comparison report of every method trained on a dataset.

What the report holds: :mod:`samnet.evaluation.report`.
"""

from __future__ import annotations

import argparse

from samnet.core.datasets import Dataset
from samnet.core.errors import cli_entry
from samnet.evaluation.report import write_report


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samnet_compare",
        description="Write the comparison report of every method trained on a dataset.",
    )
    parser.add_argument("dataset", help="DatasetNNN, its full name, or its id")
    args = parser.parse_args(argv)
    folder = write_report(Dataset.resolve(args.dataset).name)
    print((folder / "report.md").read_text())
    print(f"report written to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
