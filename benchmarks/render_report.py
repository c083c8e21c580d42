"""Re-render saved comparison reports from their report.json, and screenshot each HTML page.

    python benchmarks/render_report.py benchmarks/results/compare_hippocampus_cpu [FOLDER ...]

Into each folder, beside its report.json, writes report.md, report.html, dice_boxplot.png and
training_curves.png with the functions ``samnet_compare`` uses, and report_screenshot.png:
report.html as a user sees it in headless Chromium (Debian's ``chromium`` package:
``apt-get install -y chromium``) at 1280 x 2400 pixels.

report.json is read, never rewritten. The statistics (SAM against each baseline with
Holm's correction and confidence intervals, the best configuration) are derived from its
per-case rows by ``compare_and_select``, as ``samnet_compare`` derives them; what the file
does not hold (NSD and HD95 in a report made before samnet computed them, the plan's
``sam`` block that titles a SAM method in full) is shown as missing or named from the
method's identifier.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from samnet.evaluation.compare import compare_and_select
from samnet.evaluation.report import write_documents

SCREENSHOT_FILE = "report_screenshot.png"
WINDOW_SIZE = "1280,2400"


def rerender(folder: Path) -> None:
    """report.md, report.html and the figures of ``folder/report.json``, into ``folder``."""
    report = json.loads((folder / "report.json").read_text())
    labels = sorted(report["labels"], key=int)
    report |= compare_and_select(report["methods"], report["ensembles"], labels)
    write_documents(report, folder)


def screenshot(page: Path, target: Path) -> None:
    """``page`` as headless Chromium renders it, saved as the PNG ``target``."""
    browser = shutil.which("chromium")
    if browser is None:
        raise SystemExit(
            "no chromium on PATH: install Debian's package (apt-get install -y chromium)"
        )
    subprocess.run(
        [
            browser,
            "--headless",
            # Chromium refuses to sandbox itself as root, as in a container.
            "--no-sandbox",
            "--hide-scrollbars",
            f"--screenshot={target.resolve()}",
            f"--window-size={WINDOW_SIZE}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders", type=Path, nargs="+", help="folders with report.json"
    )
    for folder in parser.parse_args().folders:
        rerender(folder)
        screenshot(folder / "report.html", folder / SCREENSHOT_FILE)
        print(f"re-rendered {folder} and saved {folder / SCREENSHOT_FILE}")


if __name__ == "__main__":
    main()
