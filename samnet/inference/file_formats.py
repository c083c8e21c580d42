"""Input images in several formats: the cases of a folder, their conversion, the write-back.

Inputs may be NIfTI, MHA, NRRD or PNG (also BMP, TIFF, JPEG), one file per channel named
``CASE_0000.ext`` as in nnU-Net, or one file per case. Files nnU-Net's reader of the training
data cannot take are converted into the training data's format first, keeping their geometry.
Each segmentation goes back in its input's format and geometry as ``CASE.ext`` (PNG for JPEG
inputs: labels must not be compressed lossily).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import SimpleITK as sitk

from samnet.core.errors import SamnetError
from samnet.preprocessing.intake.image_io import (
    NATURAL_IMAGE_ENDINGS,
    read_errors_named,
    read_image_info,
)

MEDICAL_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".gipl")
INPUT_ENDINGS = MEDICAL_ENDINGS + NATURAL_IMAGE_ENDINGS
LOSSY_ENDINGS = (".jpg", ".jpeg")
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def file_ending(path: Path) -> str | None:
    """The image ending of ``path`` (``.nii.gz``, ``.png``, ...) in lower case, or None."""
    name = path.name.lower()
    return next((e for e in INPUT_ENDINGS if name.endswith(e)), None)


def case_name(path: Path) -> str:
    return path.name[: -len(file_ending(path))]


def cases_in_folder(folder: Path, num_channels: int) -> dict[str, list[Path]]:
    """The cases of an input folder, by case id: their files in channel order.

    nnU-Net's naming (``CASE_0000.ext``, ``CASE_0001.ext``, ...) when every image file has it
    and every case has all channels (or one file each, holding them all); otherwise each
    file is a case of its own.
    """
    if not folder.is_dir():
        raise SamnetError(
            folder, "is not a folder", "give the folder that holds the images (-i)"
        )
    visible = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in visible if p.is_file() and file_ending(p)]
    skipped = [p.name for p in visible if p not in files]
    if skipped:
        print(
            f"samnet: skipping {len(skipped)} non-image entries: {', '.join(skipped)}"
        )
    if not files:
        raise SamnetError(
            folder,
            f"holds no images ({', '.join(INPUT_ENDINGS)})",
            "give the folder of images to segment",
        )
    matches = [_CHANNEL_FILE.match(case_name(p)) for p in files]
    if all(matches):
        grouped: dict[str, dict[int, Path]] = {}
        for match, path in zip(matches, files):
            grouped.setdefault(match["case"], {})[int(match["channel"])] = path
        channel_sets = {frozenset(channels) for channels in grouped.values()}
        if channel_sets <= {frozenset(range(num_channels)), frozenset({0})}:
            return {
                case: [channels[k] for k in sorted(channels)]
                for case, channels in grouped.items()
            }
    names = [case_name(p) for p in files]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SamnetError(
            folder,
            f"holds several files for case(s) {', '.join(repeated)} (in different formats)",
            "keep one file per case: the segmentation is named after the case",
        )
    return {name: [p] for name, p in zip(names, files)}


def _header(path: Path) -> tuple[int, int]:
    """Dimension and components per pixel of a medical image, from its header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with read_errors_named(path):
        reader.ReadImageInformation()
    return reader.GetDimension(), reader.GetNumberOfComponents()


def needs_conversion(files: list[Path], dataset_ending: str) -> bool:
    """Whether nnU-Net's reader of the training data cannot take ``files`` as they are.

    It can when they are in the training data's format and, for medical formats, each
    holds one 2D or 3D channel: nnU-Net reads 4D and multi-component files but cannot
    write their segmentations.
    """
    if any(file_ending(f) != dataset_ending for f in files):
        return True
    if dataset_ending in NATURAL_IMAGE_ENDINGS:
        return False
    return any(_header(f) not in ((2, 1), (3, 1)) for f in files)


def _scalar_channels(image: sitk.Image) -> list[sitk.Image]:
    """The channels of a medical image (volumes of a 4D one, components of a vector one)."""
    volumes = [image]
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        volumes = [
            sitk.Extract(image, [*size[:3], 0], [0, 0, 0, t]) for t in range(size[3])
        ]
    return [
        sitk.VectorIndexSelectionCast(volume, k)
        if volume.GetNumberOfComponentsPerPixel() > 1
        else volume
        for volume in volumes
        for k in range(volume.GetNumberOfComponentsPerPixel())
    ]


def convert_case(
    case: str, files: list[Path], dataset_ending: str, staging: Path
) -> list[Path]:
    """Write a case as ``CASE_XXXX<dataset_ending>`` files into ``staging``, geometry kept.

    Medical formats become one scalar file per channel; 2D images stay 2D images (an RGB
    PNG stays one RGB file, as nnU-Net's 2D reader takes it).
    """
    natural = dataset_ending in NATURAL_IMAGE_ENDINGS
    written: list[Path] = []
    for path in files:
        if natural and file_ending(path) not in NATURAL_IMAGE_ENDINGS:
            raise SamnetError(
                path,
                f"is a {file_ending(path)} image, but the model was trained on "
                f"{dataset_ending} 2D images",
                f"give 2D images ({', '.join(NATURAL_IMAGE_ENDINGS)}) to this model",
            )
        with read_errors_named(path):
            image = sitk.ReadImage(str(path))
        for channel in [image] if natural else _scalar_channels(image):
            target = staging / f"{case}_{len(written):04d}{dataset_ending}"
            try:
                sitk.WriteImage(channel, str(target), True)
            except RuntimeError as error:
                raise SamnetError(
                    path,
                    f"cannot be stored as {dataset_ending}, the training data's format "
                    f"({str(error).strip().splitlines()[-1]})",
                    f"convert it to {dataset_ending} yourself, as the training images were",
                ) from error
            written.append(target)
    return written


def check_channels(
    case: str, files: list[Path], given: list[Path], channel_names: list[str]
) -> None:
    """A case (``files`` as the model reads them, ``given`` by the user) holds the model's channels."""
    found = sum(read_image_info(f).channels for f in files)
    if found != len(channel_names):
        raise SamnetError(
            given[0],
            f"case {case} has {found} channel(s) in {len(given)} file(s), but the model "
            f"takes {len(channel_names)} ({', '.join(channel_names)})",
            "give one file per channel named CASE_0000, CASE_0001, ... (nnU-Net's naming) "
            "or one file per case holding all channels",
        )


def stage_inputs(
    cases: dict[str, list[Path]],
    dataset_ending: str,
    channel_names: list[str],
    staging: Path,
) -> tuple[dict[str, list[Path]], set[str]]:
    """Each case's files as the model reads them (as given, or converted into ``staging``),
    and the cases that were converted."""
    inputs, converted = {}, set()
    for case, files in cases.items():
        inputs[case] = files
        if needs_conversion(files, dataset_ending):
            inputs[case] = convert_case(case, files, dataset_ending, staging)
            converted.add(case)
        check_channels(case, inputs[case], files, channel_names)
    if converted:
        print(
            f"samnet: converted {len(converted)} case(s) to {dataset_ending} for the model"
        )
    return inputs, converted


def write_back(
    segmentation: Path, inputs: list[Path], output: Path, case: str, converted: bool
) -> Path:
    """Put a case's segmentation into ``output`` in the format and geometry of its input."""
    ending = file_ending(inputs[0])
    if not converted:
        return Path(shutil.move(segmentation, output / f"{case}{ending}"))
    labels = sitk.ReadImage(str(segmentation))
    if ending in MEDICAL_ENDINGS:
        # the input's own header, not the converted copy's: NIfTI keeps geometry in float32
        info = read_image_info(inputs[0])
        if tuple(labels.GetSize()) != tuple(info.size):
            raise SamnetError(
                inputs[0],
                f"has size {info.size} but its segmentation {labels.GetSize()}",
                "report this: nnU-Net writes segmentations on the input's grid",
            )
        labels.SetSpacing(info.spacing)
        labels.SetOrigin(info.origin)
        labels.SetDirection(info.direction)
    target = output / f"{case}{'.png' if ending in LOSSY_ENDINGS else ending}"
    sitk.WriteImage(labels, str(target), True)
    return target
