"""``samnet_convert_2d``: a folder of 2D images and a folder of same-named masks into an nnU-Net dataset.

The result follows nnU-Net's natural-image convention (``NaturalImage2DIO``): PNG files,
one file per channel (``{case}_0000.png``; RGB becomes ``_0000/_0001/_0002``) and
``labelsTr/{case}.png`` holding class ids 0, 1, 2, ... as uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from samnet.core.atomic import atomic_folder
from samnet.core.errors import SamnetError
from samnet.preprocessing.intake.image_io import read_errors_named
from samnet.preprocessing.intake.raw_dataset import (
    integer_labels,
    raw_dataset_target,
    write_dataset_json,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LOSSY_SUFFIXES = (".jpg", ".jpeg")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F")
RGB_CHANNEL_NAMES = ["R", "G", "B"]
FILE_ENDING = ".png"
# PNG's default compression (level 6) is about 5x slower to write than level 1 for ~15% smaller files.
PNG_COMPRESSION = 1


def images_by_case(folder: Path, role: str) -> dict[str, Path]:
    """The visible image files in ``folder``, keyed by file name without extension."""
    if not folder.is_dir():
        raise SamnetError(
            folder,
            f"the {role} folder does not exist",
            f"pass the folder that holds the {role}",
        )
    files: dict[str, Path] = {}
    visible = (
        path for path in sorted(folder.iterdir()) if not path.name.startswith(".")
    )
    for path in visible:
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise SamnetError(
                path,
                f"has the same name as {files[path.stem].name}",
                "keep one file per case",
            )
        files[path.stem] = path
    if not files:
        raise SamnetError(
            folder,
            f"holds no {role} ({', '.join(IMAGE_SUFFIXES)})",
            f"pass the folder that holds the {role}",
        )
    return files


def pair_cases(
    images: dict[str, Path], masks: dict[str, Path]
) -> list[tuple[str, Path, Path]]:
    """``(case, image, mask)`` for every case; one error listing every file without a partner."""
    unpaired = [f"{images[c]} (no mask)" for c in sorted(images.keys() - masks.keys())]
    unpaired += [f"{masks[c]} (no image)" for c in sorted(masks.keys() - images.keys())]
    if unpaired:
        raise SamnetError(
            None,
            f"{len(unpaired)} file(s) have no partner: {', '.join(unpaired)}",
            "give every image a mask with the same name (extensions may differ), or remove the extra files",
        )
    lossy = [str(m) for m in masks.values() if m.suffix.lower() in LOSSY_SUFFIXES]
    if lossy:
        raise SamnetError(
            None,
            f"JPEG masks blur class ids at every edge: {', '.join(lossy)}",
            "export the masks losslessly (PNG, TIFF or BMP)",
        )
    return [(case, images[case], masks[case]) for case in sorted(images)]


def open_image(path: Path) -> Image.Image:
    """The image at ``path`` with its pixels loaded."""
    with read_errors_named(path), Image.open(path) as image:
        image.load()
        return image


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """Pixel mode and (width, height), read without decoding the pixels."""
    with read_errors_named(path), Image.open(path) as image:
        return image.mode, image.size


def count_channels(cases: list[tuple[str, Path, Path]]) -> int:
    """3 when any image is in color, else 1; refuses a mask whose size differs from its image's."""
    mismatched = []
    num_channels = 1
    for _, image, mask in cases:
        mode, image_size = image_header(image)
        _, mask_size = image_header(mask)
        if mask_size != image_size:
            mismatched.append(
                f"{mask} is {mask_size[0]}x{mask_size[1]}, {image.name} {image_size[0]}x{image_size[1]}"
            )
        if mode not in GRAYSCALE_MODES:
            num_channels = len(RGB_CHANNEL_NAMES)
    if mismatched:
        raise SamnetError(
            None,
            f"masks differ in size from their images: {'; '.join(mismatched)}",
            "resize the masks",
        )
    return num_channels


def image_channels(path: Path, num_channels: int) -> list[np.ndarray]:
    """The image's ``num_channels`` channels as uint8/uint16 arrays; grayscale repeats in a color dataset."""
    image = open_image(path)
    if image.mode not in GRAYSCALE_MODES:
        rgb = np.asarray(image.convert("RGB"))
        return [rgb[..., channel] for channel in range(num_channels)]
    gray = np.asarray(image.convert("L") if image.mode in ("1", "LA") else image)
    # PNG holds at most 16 bits per channel: accept wider pixels only when they fit losslessly.
    wide = gray.dtype.kind == "f" or gray.dtype.itemsize > 2
    if wide and not np.array_equal(gray, gray.astype(np.uint16)):
        raise SamnetError(
            path,
            f"holds {gray.dtype} pixels that 16-bit PNG cannot keep",
            "export it as 8/16 bit",
        )
    return [
        gray.astype(np.uint16 if gray.dtype.itemsize > 1 else np.uint8)
    ] * num_channels


def mask_values(path: Path) -> tuple[np.ndarray, bool]:
    """The mask's class ids and whether they were stored as 0/255 (then mapped to 0/1)."""
    mask = open_image(path)
    if mask.mode in GRAYSCALE_MODES or mask.mode == "P":
        values = np.asarray(mask.convert("L") if mask.mode == "LA" else mask)
    else:
        rgb = np.asarray(mask.convert("RGB"))
        if np.any(rgb[..., 1:] != rgb[..., :1]):
            raise SamnetError(
                path,
                "is a color mask (its R, G and B channels differ)",
                "save masks as single-channel images holding class ids 0, 1, 2, ...",
            )
        values = rgb[..., 0]
    labels = integer_labels(values, path)
    if labels.max(initial=0) == 255 and np.isin(labels, (0, 255)).all():
        return (labels == 255).astype(np.uint8), True
    return labels, False


def label_names(present: set[int], given: list[str] | None) -> dict[str, int]:
    """``{name: id}`` for the class ids found in the masks, which must be 0, 1, ..., K."""
    num_classes = max(present) + 1
    if present != set(range(num_classes)):
        raise SamnetError(
            None,
            f"the masks hold class ids {sorted(present)}: {sorted(set(range(num_classes)) - present)} never appear",
            "class ids must be consecutive 0, 1, 2, ...: renumber the masks",
        )
    names = given or ["background"] + [f"class_{i}" for i in range(1, num_classes)]
    if (
        len(names) != num_classes
        or names[0] != "background"
        or len(set(names)) != len(names)
    ):
        raise SamnetError(
            None,
            f"--label-names gives {names} but the masks hold class ids 0..{num_classes - 1}",
            f"give {num_classes} distinct names, the first one 'background'",
        )
    return {name: index for index, name in enumerate(names)}


def save_png(values: np.ndarray, path: Path) -> None:
    Image.fromarray(values).save(path, compress_level=PNG_COMPRESSION)


def convert_2d(
    images: Path,
    masks: Path,
    name: str,
    dataset_number: int,
    modality: str | None = None,
    given_label_names: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert paired 2D images and masks into ``nnUNet_raw/DatasetNNN_Name`` and return that folder."""
    cases = pair_cases(
        images_by_case(Path(images), "images"), images_by_case(Path(masks), "masks")
    )
    target = raw_dataset_target(dataset_number, name)
    num_channels = count_channels(cases)
    channel_names = [modality or "gray"] if num_channels == 1 else RGB_CHANNEL_NAMES
    with atomic_folder(target, overwrite) as staging:
        images_tr, labels_tr = staging / "imagesTr", staging / "labelsTr"
        images_tr.mkdir()
        labels_tr.mkdir()
        present: set[int] = set()
        mapped_255 = 0
        for case, _, mask in tqdm(cases, desc="labelsTr", unit="case"):
            class_ids, was_255 = mask_values(mask)
            present.update(np.unique(class_ids).tolist())
            mapped_255 += was_255
            save_png(class_ids, labels_tr / f"{case}{FILE_ENDING}")
        labels = label_names(present, given_label_names)
        for case, image, _ in tqdm(cases, desc="imagesTr", unit="case"):
            for index, channel in enumerate(image_channels(image, num_channels)):
                save_png(channel, images_tr / f"{case}_{index:04d}{FILE_ENDING}")
        write_dataset_json(
            staging, channel_names, labels, len(cases), FILE_ENDING, {"name": name}
        )
    if mapped_255:
        print(f"{mapped_255} mask(s) stored as 0/255 were mapped to class ids 0/1")
    if modality and num_channels > 1:
        print(f"--modality {modality} ignored: color images get channels R, G, B")
    channels, classes = ", ".join(channel_names), ", ".join(labels)
    print(f"wrote {target}: {len(cases)} cases, channels {channels}, labels {classes}")
    return target
