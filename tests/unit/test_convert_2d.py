"""samnet_convert_2d on tiny synthetic image/mask folders, and on the real CXR_Lungs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_dataset
from PIL import Image

from samnet.cli.convert_2d import main
from samnet.core.errors import SamnetError
from samnet.preprocessing.checks.dataset import check_dataset
from samnet.preprocessing.intake.convert_2d import convert_2d

RNG = np.random.default_rng(0)


def mask_of(size: tuple[int, int], foreground: int) -> np.ndarray:
    """A (height, width) mask: background with a block of ``foreground``."""
    mask = np.zeros(size, np.uint8)
    mask[2:6, 3:8] = foreground
    return mask


def save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def gray_folders(root: Path) -> tuple[Path, Path]:
    """Grayscale PNG and JPEG images; 0/255 masks as PNG and TIFF; different sizes per case."""
    images, masks = root / "images", root / "masks"
    save(RNG.integers(0, 256, (10, 12), np.uint8), images / "a.png")
    save(RNG.integers(0, 256, (9, 14), np.uint8), images / "b.jpg")
    save(mask_of((10, 12), 255), masks / "a.png")
    save(mask_of((9, 14), 255), masks / "b.tif")
    save(mask_of((9, 14), 255), masks / ".b.png")
    return images, masks


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_grayscale_with_255_masks(
    tmp_path: Path, nnunet_folders: dict[str, Path], capsys
) -> None:
    images, masks = gray_folders(tmp_path)
    target = convert_2d(images, masks, "Gray", 501, modality="X-ray")
    assert target == nnunet_folders["nnUNet_raw"] / "Dataset501_Gray"
    assert names_in(target / "imagesTr") == ["a_0000.png", "b_0000.png"]
    assert names_in(target / "labelsTr") == ["a.png", "b.png"]
    assert json.loads((target / "dataset.json").read_text()) == {
        "channel_names": {"0": "X-ray"},
        "labels": {"background": 0, "class_1": 1},
        "numTraining": 2,
        "file_ending": ".png",
        "name": "Gray",
    }
    np.testing.assert_array_equal(
        read_png(target / "imagesTr" / "a_0000.png"), read_png(images / "a.png")
    )
    np.testing.assert_array_equal(
        read_png(target / "imagesTr" / "b_0000.png"), read_png(images / "b.jpg")
    )
    label = read_png(target / "labelsTr" / "b.png")
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, mask_of((9, 14), 1))
    assert (
        "2 mask(s) stored as 0/255 were mapped to class ids 0/1"
        in capsys.readouterr().out
    )


def test_rgb_images_become_three_channels(
    tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    color = RNG.integers(0, 256, (8, 10, 3), np.uint8)
    gray = RNG.integers(0, 256, (7, 9), np.uint8)
    save(color, tmp_path / "images" / "color.tiff")
    save(gray, tmp_path / "images" / "gray.bmp")
    save(np.stack([mask_of((8, 10), 2)] * 3, axis=-1), tmp_path / "masks" / "color.png")
    save(mask_of((7, 9), 1), tmp_path / "masks" / "gray.png")
    target = convert_2d(
        tmp_path / "images",
        tmp_path / "masks",
        "Rgb",
        502,
        given_label_names=["background", "liver", "tumor"],
    )
    description = json.loads((target / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert description["labels"] == {"background": 0, "liver": 1, "tumor": 2}
    for channel in range(3):
        written = read_png(target / "imagesTr" / f"color_{channel:04d}.png")
        np.testing.assert_array_equal(written, color[..., channel])
        np.testing.assert_array_equal(
            read_png(target / "imagesTr" / f"gray_{channel:04d}.png"), gray
        )
    np.testing.assert_array_equal(
        read_png(target / "labelsTr" / "color.png"), mask_of((8, 10), 2)
    )


def test_unpaired_files_are_listed_in_one_error(
    tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    images, masks = gray_folders(tmp_path)
    save(mask_of((4, 4), 0), masks / "orphan.png")
    (masks / "a.png").unlink()
    (masks / "b.tif").unlink()
    with pytest.raises(SamnetError) as raised:
        convert_2d(images, masks, "Gray", 501)
    message = str(raised.value)
    assert "3 file(s) have no partner" in message
    for listed in (images / "a.png", images / "b.jpg", masks / "orphan.png"):
        assert str(listed) in message


@pytest.mark.parametrize(
    ("break_masks", "problem"),
    [
        (
            lambda masks: save(mask_of((9, 13), 1), masks / "b.tif"),
            r"differ in size.*b\.tif is 13x9",
        ),
        (
            lambda masks: (masks / "b.tif").write_bytes(b"not an image"),
            r"b\.tif: cannot be read",
        ),
        (
            lambda masks: save(mask_of((9, 14), 3), masks / "b.tif"),
            r"class ids \[0, 1, 3\]: \[2\] never appear",
        ),
        (
            lambda masks: save(
                RNG.integers(0, 3, (9, 14, 3), np.uint8), masks / "b.tif"
            ),
            "is a color mask",
        ),
    ],
    ids=["size-mismatch", "unreadable", "not-consecutive", "color-mask"],
)
def test_bad_masks_are_clear_errors_and_leave_nothing(
    tmp_path: Path, nnunet_folders: dict[str, Path], break_masks, problem
) -> None:
    images, masks = gray_folders(tmp_path)
    break_masks(masks)
    with pytest.raises(SamnetError, match=problem):
        convert_2d(images, masks, "Gray", 501)
    assert list(nnunet_folders["nnUNet_raw"].iterdir()) == []


def test_command_line(
    tmp_path: Path, nnunet_folders: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    images, masks = gray_folders(tmp_path)
    arguments = [
        "--images",
        str(images),
        "--labels",
        str(masks),
        "--name",
        "Gray",
        "--id",
        "7",
    ]
    assert main([*arguments, "--label-names", "background, lesion"]) == 0
    target = nnunet_folders["nnUNet_raw"] / "Dataset007_Gray"
    assert json.loads((target / "dataset.json").read_text())["labels"] == {
        "background": 0,
        "lesion": 1,
    }
    (target / "marker.txt").write_text("kept")
    assert main(arguments) == 1
    assert "already exists" in capsys.readouterr().err
    assert (target / "marker.txt").exists()
    assert main([*arguments, "--overwrite", "--label-names", "lesion,background"]) == 1
    assert "the first one 'background'" in capsys.readouterr().err
    assert main([*arguments, "--overwrite"]) == 0
    assert not (target / "marker.txt").exists()


def test_real_cxr_lungs(nnunet_folders: dict[str, Path]) -> None:
    source = shared_dataset("CXR_Lungs")
    started = time.perf_counter()
    target = convert_2d(
        source / "images",
        source / "labels",
        "CXRLungs",
        501,
        "X-ray",
        ["background", "right_lung", "left_lung"],
    )
    print(f"converted CXR_Lungs in {time.perf_counter() - started:.1f} s")
    description = json.loads((target / "dataset.json").read_text())
    assert description["numTraining"] == 98
    assert description["labels"] == {"background": 0, "right_lung": 1, "left_lung": 2}
    assert (
        len(names_in(target / "imagesTr")) == len(names_in(target / "labelsTr")) == 98
    )
    present = set()
    for label_file in (target / "labelsTr").iterdir():
        label = read_png(label_file)
        assert label.dtype == np.uint8
        assert (
            label.shape
            == read_png(target / "imagesTr" / f"{label_file.stem}_0000.png").shape
        )
        present.update(np.unique(label).tolist())
    assert present == {0, 1, 2}
    assert check_dataset(target) == []
