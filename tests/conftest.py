"""Shared fixtures: private nnU-Net folders per test, and the real data beside the repository."""

from __future__ import annotations

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
