"""Shared fixtures: private nnU-Net folders per test, and the real data beside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """nnUNet_raw/preprocessed/results under ``tmp_path``, set in the environment."""
    folders = {}
    for variable, sub in (
        ("nnUNet_raw", "raw"),
        ("nnUNet_preprocessed", "preprocessed"),
        ("nnUNet_results", "results"),
    ):
        folders[variable] = tmp_path / sub
        folders[variable].mkdir()
        monkeypatch.setenv(variable, str(folders[variable]))
    return folders


def shared_dataset(name: str) -> Path:
    """A dataset from ../shared/data, or a clean skip when this checkout has none beside it."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (it sits beside the repository in CI)")
    return path


def demo_environment(
    root: Path, dataset_id: int, num_training: int, num_test: int
) -> dict[str, str]:
    """A demo dataset in ``root/raw`` and the environment for subprocesses that use it.

    nnU-Net's folders under ``root`` and one worker process each; this process's own
    environment is left as it was.
    """
    from samnet.preprocessing.demo_dataset import write_demo_dataset

    folders = {
        "nnUNet_raw": root / "raw",
        "nnUNet_preprocessed": root / "preprocessed",
        "nnUNet_results": root / "results",
    }
    environment = dict(os.environ, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1")
    environment.update({variable: str(path) for variable, path in folders.items()})
    with pytest.MonkeyPatch.context() as patch:
        for variable, path in folders.items():
            patch.setenv(variable, str(path))
        write_demo_dataset(dataset_id, num_training=num_training, num_test=num_test)
    return environment


def run_module(
    environment: dict[str, str], module: str, *arguments: str, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m module arguments`` as a user runs it, in ``environment``; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        env=environment,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def heavy_imports(modules: list[str], heavy: tuple[str, ...]) -> list[str]:
    """Which of ``heavy`` importing ``modules`` loads, in a fresh interpreter (for ``--help`` speed)."""
    code = (
        f"import sys, {', '.join(modules)}; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    return [name for name in run.stdout.strip().split(",") if name]
