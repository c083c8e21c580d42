"""``samnet_convert_msd``: a Medical Segmentation Decathlon task folder into an nnU-Net raw dataset.

Like nnU-Net's own ``nnUNetv2_convert_MSD_dataset`` (whose 4D splitting it reuses), but the
dataset appears only when complete, ``imagesTs`` is optional, and labels are checked and
written as integers with their original geometry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from samnet.core.atomic import atomic_folder
from samnet.core.errors import SamnetError
from samnet.core.paths import configure_environment
from samnet.preprocessing.intake.image_io import read_errors_named
from samnet.preprocessing.intake.raw_dataset import (
    integer_labels,
    raw_dataset_target,
    write_dataset_json,
)

_TASK_FOLDER = re.compile(r"^Task(\d+)_(\w+)$")
_MSD_KEYS = ("modality", "labels", "training")
_KEPT_METADATA = ("name", "description", "reference", "licence")
NIFTI = ".nii.gz"


@dataclass(frozen=True)
class MsdTask:
    """What an MSD task folder holds.

    Training pairs come from ``dataset.json``; test images are the visible ``.nii.gz``
    files in ``imagesTs`` (none when that folder is absent), as MSD ships no test labels.
    """

    number: int
    name: str
    channel_names: list[str]
    labels: dict[str, int]
    training: list[tuple[Path, Path]]
    test_images: list[Path]
    metadata: dict[str, str]


def case_id(image: Path) -> str:
    return image.name[: -len(NIFTI)]


def read_msd_task(folder: Path) -> MsdTask:
    """Parse an MSD task folder; a :class:`SamnetError` for anything nnU-Net could not use."""
    if not folder.is_dir():
        raise SamnetError(
            folder,
            "is not a folder",
            "give the path of an extracted MSD task, e.g. Task04_Hippocampus",
        )
    match = _TASK_FOLDER.match(folder.name)
    if not match:
        raise SamnetError(
            folder,
            "is not named TaskNN_Name",
            "keep the folder name MSD ships, e.g. Task04_Hippocampus",
        )
    json_path = folder / "dataset.json"
    if not json_path.is_file():
        raise SamnetError(
            json_path,
            "is missing",
            "use the complete MSD task folder, which ships a dataset.json",
        )
    try:
        description = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SamnetError(
            json_path,
            f"is not valid JSON ({error})",
            "restore the dataset.json MSD ships",
        ) from error
    try:
        channels = description["modality"]
        channel_names = [channels[key] for key in sorted(channels, key=int)]
        labels = {name: int(value) for value, name in description["labels"].items()}
        training = [
            (folder / entry["image"], folder / entry["label"])
            for entry in description["training"]
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        already_v2 = isinstance(description, dict) and "channel_names" in description
        raise SamnetError(
            json_path,
            f"is not in MSD form (needs {', '.join(_MSD_KEYS)} with image/label pairs; problem: {error!r})",
            "this is already an nnU-Net v2 dataset: copy it into nnUNet_raw as DatasetNNN_Name"
            if already_v2
            else "restore the dataset.json MSD ships with the task",
        ) from error
    listed = [path for pair in training for path in pair]
    missing = [str(path) for path in listed if not path.is_file()]
    if missing:
        raise SamnetError(
            json_path,
            f"lists {len(missing)} file(s) that do not exist: {', '.join(missing)}",
            "restore the missing files, or remove their entries from dataset.json",
        )
    not_nifti = [str(path) for path in listed if not path.name.endswith(NIFTI)]
    if not_nifti:
        raise SamnetError(
            json_path,
            f"lists files that are not {NIFTI}: {', '.join(not_nifti)}",
            "MSD ships .nii.gz",
        )
    test_folder = folder / "imagesTs"
    test_images = (
        sorted(test_folder.glob(f"[!.]*{NIFTI}")) if test_folder.is_dir() else []
    )
    return MsdTask(
        number=int(match.group(1)),
        name=match.group(2),
        channel_names=channel_names,
        labels=labels,
        training=training,
        test_images=test_images,
        metadata={
            key: description[key] for key in _KEPT_METADATA if key in description
        },
    )


def write_channels(image: Path, output_folder: Path, num_channels: int) -> None:
    """Write ``{case}_XXXX.nii.gz``, one file per channel of a 3D or 4D image."""
    # nnunetv2 reads nnUNet_* at import: convert_msd ran configure_environment() first
    from nnunetv2.dataset_conversion.convert_MSD_dataset import split_4d_nifti

    header = sitk.ImageFileReader()
    header.SetFileName(str(image))
    with read_errors_named(image):
        header.ReadImageInformation()
    dimension = header.GetDimension()
    found = {3: 1, 4: header.GetSize()[-1]}.get(dimension)
    if found != num_channels:
        raise SamnetError(
            image,
            f"is a {dimension}D image with {found or 'no'} channel(s), but dataset.json lists {num_channels} modalities",
            "MSD images are 3D (one modality) or 4D with one volume per modality: replace this file",
        )
    with read_errors_named(image):
        split_4d_nifti(str(image), str(output_folder))


def write_integer_label(source: Path, target: Path) -> None:
    """Write the label map at ``source`` as unsigned integers with exactly its geometry."""
    with read_errors_named(source):
        label = sitk.ReadImage(str(source))
    converted = sitk.GetImageFromArray(
        integer_labels(sitk.GetArrayViewFromImage(label), source)
    )
    converted.CopyInformation(label)
    sitk.WriteImage(converted, str(target), useCompression=True)


def convert_msd(
    source: Path, dataset_number: int | None = None, overwrite: bool = False
) -> Path:
    """Convert the MSD task at ``source`` into ``nnUNet_raw/DatasetNNN_Name`` and return that folder."""
    task = read_msd_task(Path(source))
    target = raw_dataset_target(
        task.number if dataset_number is None else dataset_number, task.name
    )
    configure_environment()  # before split_4d_nifti imports nnunetv2, which reads the env at import
    with atomic_folder(target, overwrite) as staging:
        images_tr, labels_tr = staging / "imagesTr", staging / "labelsTr"
        images_tr.mkdir()
        labels_tr.mkdir()
        for image, label in tqdm(task.training, desc="imagesTr+labelsTr", unit="case"):
            write_channels(image, images_tr, len(task.channel_names))
            write_integer_label(label, labels_tr / f"{case_id(image)}{NIFTI}")
        if task.test_images:
            (staging / "imagesTs").mkdir()
            for image in tqdm(task.test_images, desc="imagesTs", unit="case"):
                write_channels(image, staging / "imagesTs", len(task.channel_names))
        write_dataset_json(
            staging,
            task.channel_names,
            task.labels,
            len(task.training),
            NIFTI,
            task.metadata,
        )
    print(
        f"wrote {target}: {len(task.training)} training cases, {len(task.test_images)} test images, "
        f"channels {', '.join(task.channel_names)}, labels {', '.join(task.labels)}"
    )
    return target
