"""samnet_check_dataset: a valid dataset passes; each kind of breakage is named, file and all."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from samnet.cli.check_dataset import main
from samnet.preprocessing.checks.dataset import Problem, check_dataset

SPACING = (0.8, 0.8, 2.0)
ORIGIN = (10.0, -5.0, 3.0)
SHAPE = (12, 10, 8)  # numpy order (z, y, x)
SHAPE_2D = (10, 12)
CHANNELS = ("T1", "T2")
LABELS = {"background": 0, "liver": 1, "tumour": 2}
TRAINING_CASES = ("case_000", "case_001", "case_002")


def write_nifti(
    path: Path,
    pixels: np.ndarray,
    spacing: tuple[float, ...] = SPACING,
    origin: tuple[float, ...] = ORIGIN,
    direction: tuple[float, ...] | None = None,
) -> None:
    image = sitk.GetImageFromArray(pixels)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def label_map(shape: tuple[int, ...]) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[..., 2:6, 3:7] = 1
    label[..., 6:9, 1:3] = 2
    return label


def write_dataset_json(folder: Path, channels: tuple[str, ...], ending: str) -> None:
    description = {
        "channel_names": {str(index): name for index, name in enumerate(channels)},
        "labels": LABELS,
        "numTraining": len(TRAINING_CASES),
        "file_ending": ending,
    }
    (folder / "dataset.json").write_text(json.dumps(description, indent=4))


def make_3d_dataset(folder: Path) -> Path:
    """Three training cases and one test case, two channels each, labels 0/1/2."""
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    for case in TRAINING_CASES:
        write_nifti(folder / "labelsTr" / f"{case}.nii.gz", label_map(SHAPE))
    for sub, case in [
        *(("imagesTr", case) for case in TRAINING_CASES),
        ("imagesTs", "test_000"),
    ]:
        for channel in range(len(CHANNELS)):
            pixels = rng.normal(size=SHAPE).astype(np.float32)
            write_nifti(folder / sub / f"{case}_{channel:04d}.nii.gz", pixels)
    write_dataset_json(folder, CHANNELS, ".nii.gz")
    return folder


def make_2d_dataset(folder: Path, rgb: bool = False) -> Path:
    """Three PNG training cases: one grayscale file, or one RGB file declared as R, G, B."""
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    shape = (*SHAPE_2D, 3) if rgb else SHAPE_2D
    for case in TRAINING_CASES:
        pixels = rng.integers(0, 255, size=shape, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "imagesTr" / f"{case}_0000.png")
        Image.fromarray(label_map(SHAPE_2D)).save(folder / "labelsTr" / f"{case}.png")
    write_dataset_json(folder, ("R", "G", "B") if rgb else ("gray",), ".png")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Content hash and modification time of everything under ``folder``."""
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest()
            if path.is_file()
            else "folder",
            path.stat().st_mtime_ns,
        )
        for path in sorted(folder.rglob("*"))
    }


# Corruptions: each breaks one thing in a valid dataset.


def image(
    case: str, channel: int, sub: str = "imagesTr", ending: str = ".nii.gz"
) -> str:
    return f"{sub}/{case}_{channel:04d}{ending}"


def label(case: str, ending: str = ".nii.gz") -> str:
    return f"labelsTr/{case}{ending}"


def delete(*names: str) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()

    return corrupt


def copy(source: str, target: str) -> Callable[[Path], None]:
    return lambda folder: shutil.copy(folder / source, folder / target)


def write_bytes(name: str, content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        path = folder / name
        path.write_bytes(content(path.read_bytes()))

    return corrupt


def edit_json(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        description = json.loads((folder / "dataset.json").read_text())
        change(description)
        (folder / "dataset.json").write_text(json.dumps(description))

    return corrupt


def edit_nifti(
    name: str, pixels: Callable[[np.ndarray], np.ndarray] = lambda p: p, **geometry
) -> Callable[[Path], None]:
    """Rewrite a NIfTI file with changed pixels and/or spacing, origin, direction."""

    def corrupt(folder: Path) -> None:
        path = folder / name
        original = sitk.ReadImage(str(path))
        write_nifti(
            path,
            pixels(sitk.GetArrayFromImage(original)),
            geometry.get("spacing", original.GetSpacing()),
            geometry.get("origin", original.GetOrigin()),
            geometry.get("direction", original.GetDirection()),
        )

    return corrupt


def with_value(
    value: float, dtype: type = np.float32
) -> Callable[[np.ndarray], np.ndarray]:
    def change(pixels: np.ndarray) -> np.ndarray:
        pixels = pixels.astype(dtype)
        pixels[1, 2, 3] = value
        return pixels

    return change


def relabel_tumour_as_3(folder: Path) -> None:
    edit_json(lambda d: d["labels"].update(tumour=3))(folder)
    for case in TRAINING_CASES:
        edit_nifti(label(case), lambda p: np.where(p == 2, 3, p).astype(p.dtype))(
            folder
        )


def decathlon_style(description: dict) -> None:
    """The Medical Segmentation Decathlon's dataset.json: "modality", labels by value."""
    description["modality"] = description.pop("channel_names")
    description["labels"] = {"0": "background", "1": "liver", "2": "tumour"}


def as_4d(name: str) -> Callable[[Path], None]:
    """Replace a channel file by a 4D file holding two volumes."""

    def corrupt(folder: Path) -> None:
        volume = sitk.ReadImage(str(folder / name))
        sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(folder / name))

    return corrupt


def add_text_file(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text("notes")


def half(content: bytes) -> bytes:
    return content[: len(content) // 2]


def garbage(content: bytes) -> bytes:
    return np.random.default_rng(1).bytes(len(content))


def empty(content: bytes) -> bytes:
    return b""


FLIPPED_X = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

# (id, corruption, [(phrase, file name) expected in the problems]); exactly these problems.
BROKEN_3D = [
    (
        "missing label",
        delete(label("case_001")),
        [("missing label", "case_001.nii.gz")],
    ),
    (
        "missing image channel",
        delete(image("case_001", 1)),
        [("missing image channel 0001 (T2)", "case_001_0001.nii.gz")],
    ),
    (
        "label without image",
        delete(image("case_002", 0), image("case_002", 1)),
        [("no image for this label", "case_002.nii.gz")],
    ),
    (
        "channel index beyond channel_names",
        copy(image("case_000", 1), image("case_000", 2)),
        [("channel index 0002", "case_000_0002.nii.gz")],
    ),
    (
        "wrong suffix",
        copy(label("case_000"), label("case_000", ".nii")),
        [("unexpected file", "case_000.nii")],
    ),
    (
        "stray file",
        add_text_file("imagesTr/readme.txt"),
        [("unexpected file", "readme.txt")],
    ),
    (
        "4D image for one channel",
        as_4d(image("case_000", 0)),
        [("holds 2 channels", "case_000_0000.nii.gz")],
    ),
    (
        "channel declared but absent",
        edit_json(lambda d: d["channel_names"].update({"2": "FLAIR"})),
        [
            ("missing image channel 0002 (FLAIR)", f"{case}_0002.nii.gz")
            for case in (*TRAINING_CASES, "test_000")
        ],
    ),
    (
        "shape mismatch",
        edit_nifti(label("case_001"), lambda p: p[:-1]),
        [("shape 8x10x11 does not match 8x10x12", "case_001.nii.gz")],
    ),
    (
        "spacing mismatch",
        edit_nifti(label("case_001"), spacing=(0.8, 0.8, 2.5)),
        [("spacing (0.8, 0.8, 2.5) does not match", "case_001.nii.gz")],
    ),
    (
        "origin mismatch",
        edit_nifti(label("case_001"), origin=(10.0, -5.0, 5.0)),
        [("origin (10, -5, 5) does not match", "case_001.nii.gz")],
    ),
    (
        "direction mismatch",
        edit_nifti(label("case_001"), direction=FLIPPED_X),
        [("direction (-1, 0, 0, 0, 1, 0, 0, 0, 1) does not match", "case_001.nii.gz")],
    ),
    (
        "spacing mismatch between channels",
        edit_nifti(image("case_002", 1), spacing=(0.8, 0.8, 2.5)),
        [("spacing (0.8, 0.8, 2.5) does not match", "case_002_0001.nii.gz")],
    ),
    (
        "non-integer label values",
        edit_nifti(label("case_001"), with_value(0.5)),
        [("non-integer label values (0.5)", "case_001.nii.gz")],
    ),
    (
        "undeclared label value",
        edit_nifti(label("case_001"), with_value(3, np.uint8)),
        [("not declared in dataset.json: 3", "case_001.nii.gz")],
    ),
    (
        "labels not consecutive",
        relabel_tumour_as_3,
        [("are not consecutive", "dataset.json")],
    ),
    (
        "NaN intensities",
        edit_nifti(image("case_000", 1), with_value(np.nan)),
        [("contains 1 NaN intensity", "case_000_0001.nii.gz")],
    ),
    (
        "Inf intensities",
        edit_nifti(image("test_000", 0, "imagesTs"), with_value(-np.inf)),
        [("contains 1 Inf intensity", "test_000_0000.nii.gz")],
    ),
    (
        "truncated image",
        write_bytes(image("case_001", 0), half),
        [("is truncated", "case_001_0000.nii.gz")],
    ),
    (
        "empty label",
        write_bytes(label("case_002"), empty),
        [("is empty", "case_002.nii.gz")],
    ),
    (
        "garbage label",
        write_bytes(label("case_002"), garbage),
        [("cannot be read as an image", "case_002.nii.gz")],
    ),
    ("missing dataset.json", delete("dataset.json"), [("is missing", "dataset.json")]),
    (
        "Decathlon dataset.json",
        edit_json(decathlon_style),
        [("is a Medical Segmentation Decathlon dataset.json", "dataset.json")],
    ),
    (
        "channel_names with a gap",
        edit_json(lambda d: d.update(channel_names={"0": "T1", "2": "T2"})),
        [("channel_names keys are ['0', '2']", "dataset.json")],
    ),
    (
        "ignore label not the highest",
        edit_json(lambda d: d["labels"].update(ignore=1)),
        [('"ignore" label 1 is not one integer above all others', "dataset.json")],
    ),
    (
        "invalid JSON",
        write_bytes("dataset.json", lambda c: c.replace(b"}", b",}", 1)),
        [("is not valid JSON", "dataset.json")],
    ),
    (
        "missing key",
        edit_json(lambda d: d.pop("file_ending")),
        [("lacks the required key(s) file_ending", "dataset.json")],
    ),
    (
        "labels without background",
        edit_json(lambda d: d["labels"].update(bg=d["labels"].pop("background"))),
        [('no "background" entry', "dataset.json")],
    ),
    (
        "non-integer label in dataset.json",
        edit_json(lambda d: d["labels"].update(tumour=1.5)),
        [("'tumour' has the value 1.5, which is not an integer", "dataset.json")],
    ),
    (
        "numTraining mismatch",
        edit_json(lambda d: d.update(numTraining=5)),
        [("numTraining is 5, but imagesTr and labelsTr hold 3", "dataset.json")],
    ),
    (
        "unsupported file_ending",
        edit_json(lambda d: d.update(file_ending=".jpg")),
        [("file_ending is '.jpg'", "dataset.json")],
    ),
    (
        "missing labelsTr",
        lambda folder: shutil.rmtree(folder / "labelsTr"),
        [("is missing", "labelsTr")],
    ),
]

BROKEN_2D = [
    (
        "garbage PNG",
        write_bytes(image("case_001", 0, ending=".png"), garbage),
        [("cannot be read as an image", "case_001_0000.png")],
    ),
    (
        "truncated PNG",
        write_bytes(image("case_001", 0, ending=".png"), half),
        [("cannot be read as an image", "case_001_0000.png")],
    ),
    (
        "empty PNG",
        write_bytes(label("case_000", ".png"), empty),
        [("is empty", "case_000.png")],
    ),
    (
        "RGB image for a gray channel",
        lambda folder: (
            Image.open(folder / image("case_002", 0, ending=".png"))
            .convert("RGB")
            .save(folder / image("case_002", 0, ending=".png"))
        ),
        [("holds 3 channels", "case_002_0000.png")],
    ),
    (
        "palette label",
        lambda folder: (
            Image.open(folder / label("case_002", ".png"))
            .convert("P")
            .save(folder / label("case_002", ".png"))
        ),
        [("holds 3 channels; a label file holds one", "case_002.png")],
    ),
    (
        "2D shape mismatch",
        lambda folder: Image.fromarray(label_map((10, 13))).save(
            folder / label("case_001", ".png")
        ),
        [("shape 13x10 does not match 12x10", "case_001.png")],
    ),
]


def assert_reported(problems: list[Problem], expected: list[tuple[str, str]]) -> None:
    assert len(problems) == len(expected), "\n".join(map(str, problems))
    for phrase, file_name in expected:
        assert any(
            phrase in p.problem and p.path.name == file_name for p in problems
        ), f"no problem '{phrase}' for {file_name} in:\n" + "\n".join(
            map(str, problems)
        )


def assert_cli_reports(
    folder: Path, expected: list[tuple[str, str]], capsys: pytest.CaptureFixture
) -> None:
    assert main([str(folder)]) == 1
    lines = capsys.readouterr().out.splitlines()
    for phrase, file_name in expected:
        assert any(phrase in line and file_name in line for line in lines), lines
    assert lines[-1] == f"{len(expected)} problem(s) in {folder}"


BROKEN = [(make_3d_dataset, *case) for case in BROKEN_3D]
BROKEN += [(make_2d_dataset, *case) for case in BROKEN_2D]


@pytest.mark.parametrize(
    "make_dataset, name, corrupt, expected", BROKEN, ids=[c[1] for c in BROKEN]
)
def test_each_broken_dataset_is_reported_and_left_untouched(
    tmp_path: Path,
    make_dataset: Callable[[Path], Path],
    name: str,
    corrupt: Callable[[Path], None],
    expected,
    capsys,
) -> None:
    folder = make_dataset(tmp_path / "Dataset901_Broken")
    corrupt(folder)
    before = snapshot(folder)
    assert_reported(check_dataset(folder), expected)
    assert_cli_reports(folder, expected, capsys)
    assert snapshot(folder) == before


def test_valid_3d_dataset_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_3d_dataset(tmp_path / "Dataset901_Valid")
    before = snapshot(folder)
    assert check_dataset(folder) == []
    assert main([str(folder)]) == 0
    assert capsys.readouterr().out.startswith(
        f"OK: {folder}: 3 training and 1 test cases"
    )
    assert snapshot(folder) == before


@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "rgb"])
def test_valid_2d_dataset_passes(tmp_path: Path, rgb: bool) -> None:
    assert check_dataset(make_2d_dataset(tmp_path / "Dataset902_Valid", rgb)) == []


def test_float_labels_holding_whole_numbers_pass(tmp_path: Path) -> None:
    """Real MSD data stores labels as float32; whole-number values are fine."""
    folder = make_3d_dataset(tmp_path / "Dataset901_FloatLabels")
    for case in TRAINING_CASES:
        edit_nifti(label(case), lambda p: p.astype(np.float32))(folder)
    assert check_dataset(folder) == []


def test_regions_and_ignore_label_pass(tmp_path: Path) -> None:
    folder = make_3d_dataset(tmp_path / "Dataset901_Regions")
    labels = {"background": 0, "organ": [1, 2], "tumour": 2, "ignore": 3}
    edit_json(lambda d: d.update(labels=labels, regions_class_order=[1, 2]))(folder)
    assert check_dataset(folder) == []


def test_4d_file_holding_every_declared_channel_passes(tmp_path: Path) -> None:
    folder = make_3d_dataset(tmp_path / "Dataset901_4D")
    as_4d(image("case_000", 0))(folder)
    delete(image("case_000", 1))(folder)
    assert check_dataset(folder) == []


def test_geometry_within_header_rounding_passes(tmp_path: Path) -> None:
    folder = make_3d_dataset(tmp_path / "Dataset901_Rounding")
    edit_nifti(label("case_000"), origin=(10.0, -5.0, 3.0 + 1e-5))(folder)
    assert check_dataset(folder) == []


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    folder = make_3d_dataset(tmp_path / "Dataset901_TwoProblems")
    delete(label("case_000"))(folder)
    edit_nifti(image("case_002", 0), with_value(np.nan))(folder)
    assert_reported(
        check_dataset(folder),
        [("missing label", "case_000.nii.gz"), ("NaN", "case_002_0000.nii.gz")],
    )


def test_headers_only_skips_pixel_checks(tmp_path: Path) -> None:
    folder = make_3d_dataset(tmp_path / "Dataset901_Headers")
    edit_nifti(image("case_000", 0), with_value(np.nan))(folder)
    edit_nifti(label("case_001"), spacing=(0.8, 0.8, 2.5))(folder)
    assert_reported(
        check_dataset(folder, read_pixels=False), [("spacing", "case_001.nii.gz")]
    )
    assert main([str(folder), "--headers-only"]) == 1


def test_dataset_is_found_by_id_in_nnunet_raw(
    nnunet_folders: dict[str, Path], capsys
) -> None:
    make_3d_dataset(nnunet_folders["nnUNet_raw"] / "Dataset901_Synthetic")
    assert main(["901"]) == 0
    assert "OK" in capsys.readouterr().out


def test_missing_dataset_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main([str(tmp_path / "nowhere" / "Dataset901_X")]) == 1
    assert "is not a dataset folder" in capsys.readouterr().err


def test_problem_prints_file_problem_and_fix() -> None:
    problem = Problem(
        Path("labelsTr/a.nii.gz"), "is empty (0 bytes)", "export it again"
    )
    assert (
        str(problem) == "labelsTr/a.nii.gz: is empty (0 bytes)\n  fix: export it again"
    )


def test_command_line_exit_codes(tmp_path: Path) -> None:
    folder = make_3d_dataset(tmp_path / "Dataset901_Command")
    command = [sys.executable, "-m", "samnet.cli.check_dataset", str(folder)]
    assert (
        subprocess.run(command, check=False, capture_output=True, text=True).returncode
        == 0
    )
    delete(label("case_001"))(folder)
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    assert result.returncode == 1
    assert "case_001.nii.gz: missing label" in result.stdout
