"""MSD submission zips that must be refused before they cost anything: bombs, too many or
too large entries, names that leave their folder, and NIfTI headers that claim more
voxels than the image has."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import nibabel
import numpy as np
import pytest

from samnet.cli.validate_submission import main
from samnet.core.errors import SamnetError
from samnet.msd import unzip
from samnet.msd.unzip import unpack, unsafe_name
from samnet.msd.validate import file_problems

TASK = "Task77_Fixture"
CASE = "fixture_001.nii.gz"
SHAPE = (6, 7, 5)


@pytest.fixture
def task(tmp_path: Path) -> Path:
    """An extracted MSD task folder with one test image."""
    folder = tmp_path / TASK
    (folder / "imagesTs").mkdir(parents=True)
    image = nibabel.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4))
    nibabel.save(image, folder / "imagesTs" / CASE)
    labels = {"0": "background", "1": "one"}
    (folder / "dataset.json").write_text(json.dumps({"labels": labels}))
    return folder


def prediction_bytes(shape: tuple[int, ...] = SHAPE) -> bytes:
    """A valid .nii.gz prediction of ``shape`` (all background)."""
    image = nibabel.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4))
    return gzip.compress(image.to_bytes())


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def refusal(submission: Path, task: Path, capsys: pytest.CaptureFixture) -> str:
    """What the command says when it refuses ``submission`` (exit 1, no traceback)."""
    assert main([str(submission), "--msd", str(task)]) == 1
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_a_good_zip_passes(task: Path, tmp_path: Path, capsys) -> None:
    submission = write_zip(
        tmp_path / "good.zip", {f"{TASK}/{CASE}": prediction_bytes()}
    )
    assert main([str(submission), "--msd", str(task)]) == 0
    assert f"OK: {TASK}: 1 predictions" in capsys.readouterr().out


def test_a_zip_bomb_is_refused_before_anything_is_extracted(
    task: Path, tmp_path: Path, capsys
) -> None:
    # 64 MiB of zeros deflate to about 64 KiB: the ratio of the 61 KB -> 60 MB zip.
    bomb = write_zip(tmp_path / "bomb.zip", {f"{TASK}/{CASE}": bytes(64 << 20)})
    assert bomb.stat().st_size < 1 << 20
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(SamnetError, match="compressed 1[0-9]{3} times"):
        unpack(bomb, into)
    assert not any(into.iterdir())
    assert "a zip bomb" in refusal(bomb, task, capsys)


@pytest.mark.parametrize(
    ("limit", "value", "message"),
    [
        ("MAX_MEMBERS", 2, "holds 3 entries; a submission has at most 2"),
        ("MAX_TOTAL_BYTES", 400, "bytes; a submission holds at most 400"),
        (
            "MAX_MEMBER_BYTES",
            300,
            "would extract 400 bytes; a prediction holds at most 300",
        ),
    ],
)
def test_count_and_size_limits_refuse_the_whole_zip(
    task: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    limit: str,
    value: int,
    message: str,
) -> None:
    submission = write_zip(
        tmp_path / "many.zip",
        {f"{TASK}/{CASE}": prediction_bytes(), "a.txt": b"a" * 400, "b.txt": b"b"},
    )
    monkeypatch.setattr(unzip, limit, value)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(SamnetError, match=message):
        unpack(submission, into)
    assert not any(into.iterdir())
    assert message in refusal(submission, task, capsys)


@pytest.mark.parametrize(
    "name",
    [
        f"{TASK}/..",
        f"{TASK}/../../escaped.nii.gz",
        f"/{TASK}/{CASE}",
        f"{TASK}/./{CASE}",
        f"{TASK}\\{CASE}",
        f"{TASK}/fix\nture.nii.gz",
        f"C:{TASK}/{CASE}",
    ],
)
def test_names_that_leave_their_folder_are_problems_not_tracebacks(
    task: Path, tmp_path: Path, capsys, name: str
) -> None:
    submission = write_zip(
        tmp_path / "odd.zip", {name: b"x", f"{TASK}/{CASE}": prediction_bytes()}
    )
    into = tmp_path / "into"
    into.mkdir()
    problems = unpack(submission, into)
    assert [p.problem for p in problems] == [
        f"is named {name!r}, which {unsafe_name(name)}"
    ]
    assert sorted(p.relative_to(into).as_posix() for p in into.rglob("*")) == [
        TASK,
        f"{TASK}/{CASE}",
    ]
    assert not (tmp_path / "escaped.nii.gz").exists()
    out = refusal(submission, task, capsys)
    assert "INVALID: 1 problem(s)" in out and "Traceback" not in out


def test_an_entry_twice_in_the_zip_is_a_problem(task: Path, tmp_path: Path) -> None:
    submission = tmp_path / "twice.zip"
    with zipfile.ZipFile(submission, "w") as archive:
        archive.writestr(f"{TASK}/{CASE}", prediction_bytes())
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr(f"{TASK}/{CASE}", b"other")
    problems = unpack(submission, tmp_path)
    assert [p.problem for p in problems] == ["is in the zip more than once"]
    assert (tmp_path / TASK / CASE).read_bytes() == prediction_bytes()


def test_the_header_is_checked_before_any_voxel_is_read(
    task: Path, tmp_path: Path
) -> None:
    """A header claiming 8 GB of voxels, with none behind it: a shape problem, found
    from the header alone (reading the voxels first fails, or fills the memory)."""
    header = nibabel.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.uint8)
    header.set_sform(np.eye(4), code=2)
    header.set_qform(np.eye(4), code=1)
    prediction = tmp_path / CASE
    prediction.write_bytes(gzip.compress(header.binaryblock + bytes(4)))
    problems = file_problems(prediction, task / "imagesTs" / CASE, frozenset({0, 1}))
    assert [p.problem.split(",")[0] for p in problems] == ["has shape 2000x2000x2000"]
