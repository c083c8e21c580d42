"""What SAM planning needs to know about a dataset, beyond nnU-Net's fingerprint.

``sam_fingerprint`` reads nnU-Net's ``dataset_fingerprint.json`` (spacings, shapes,
foreground intensities), ``dataset.json`` (channel names, labels) and a sample of the
label files (per-class voxel fraction and in-plane object size). Axes are numpy's
(``z, y, x``; 2D images ``1, y, x``), as in nnU-Net's fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from samnet.planners.modality import detect_modality
from samnet.preprocessing.intake.image_io import read_image

# Reading every label of a large CT dataset takes minutes; an even sample of this many
# cases gives class fractions and object sizes to a few percent.
MAX_LABEL_CASES = 60


@dataclass(frozen=True)
class ClassStatistics:
    """One foreground class.

    Attributes:
      name: its name in dataset.json.
      voxel_fraction: its share of all voxels of the sampled label files.
      in_plane_extent_mm: typical object size: median, over the slices holding the
        class, of the longer side of its in-plane bounding box.
    """

    name: str
    voxel_fraction: float
    in_plane_extent_mm: float


@dataclass(frozen=True)
class SamFingerprint:
    """A dataset as SAM planning sees it.

    Attributes:
      dimensions: 2 for 2D images, 3 for volumes.
      channels: input channels (modalities or colour channels).
      modality: family, e.g. "CT", "MRI", "X-ray", "RGB"; ``modality_evidence`` says
        how it was recognised.
      median_spacing: median voxel spacing (mm; 2D images from nnU-Net's natural-image
        reader get 999 out of plane).
      median_shape: median shape after nnU-Net's crop to non-zero.
      slicing_axis: the axis SAM slices along: the lowest-resolution one, which
        nnU-Net's planner also puts first; axis 0 for isotropic data and 2D images.
      anisotropy: out-of-plane spacing / finest in-plane spacing (1 for 2D images).
      labelled_cases, unlabelled_cases: training cases; images in imagesTs.
      classes: the foreground classes, in label order.
    """

    dimensions: int
    channels: int
    channel_names: tuple[str, ...]
    modality: str
    modality_evidence: str
    median_spacing: tuple[float, ...]
    median_shape: tuple[int, ...]
    slicing_axis: int
    anisotropy: float
    labelled_cases: int
    unlabelled_cases: int
    classes: tuple[ClassStatistics, ...]

    @property
    def in_plane_axes(self) -> tuple[int, int]:
        rest = [axis for axis in range(3) if axis != self.slicing_axis]
        return rest[0], rest[1]

    @property
    def in_plane_spacing(self) -> tuple[float, float]:
        return tuple(self.median_spacing[axis] for axis in self.in_plane_axes)

    @property
    def in_plane_shape(self) -> tuple[int, int]:
        """Median in-plane shape of the slices SAM will see, at the median spacing."""
        return tuple(self.median_shape[axis] for axis in self.in_plane_axes)

    @property
    def labelled_slices(self) -> int:
        """The labelled 2D slices SAM sees: one per 2D case, a volume's slices per 3D case."""
        return self.labelled_cases * (
            1 if self.dimensions == 2 else self.median_shape[self.slicing_axis]
        )

    @property
    def smallest_class(self) -> ClassStatistics:
        return min(self.classes, key=lambda c: c.in_plane_extent_mm)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamFingerprint:
        return cls(
            **{
                **data,
                "channel_names": tuple(data["channel_names"]),
                "median_spacing": tuple(data["median_spacing"]),
                "median_shape": tuple(data["median_shape"]),
                "classes": tuple(ClassStatistics(**c) for c in data["classes"]),
            }
        )


def slicing_axis(spacing: tuple[float, ...]) -> int:
    """The lowest-resolution axis (the first of equals), as nnU-Net's transpose picks it."""
    return int(np.argmax(spacing))


def sam_fingerprint(raw_folder: Path, nnunet_fingerprint: dict) -> SamFingerprint:
    """The fingerprint of the nnU-Net raw dataset in ``raw_folder``.

    ``nnunet_fingerprint`` is nnU-Net's ``dataset_fingerprint.json`` of it.
    """
    dataset = json.loads((raw_folder / "dataset.json").read_text())
    spacing = tuple(float(s) for s in np.median(nnunet_fingerprint["spacings"], axis=0))
    shape = tuple(
        int(s) for s in np.median(nnunet_fingerprint["shapes_after_crop"], axis=0)
    )
    dimensions = (
        2 if all(s[0] == 1 for s in nnunet_fingerprint["shapes_after_crop"]) else 3
    )
    axis = 0 if dimensions == 2 else slicing_axis(spacing)
    in_plane = [s for a, s in enumerate(spacing) if a != axis]
    channel_names = tuple(
        dataset["channel_names"][k] for k in sorted(dataset["channel_names"], key=int)
    )
    modality, evidence = detect_modality(
        channel_names,
        nnunet_fingerprint["foreground_intensity_properties_per_channel"],
        dimensions,
    )
    return SamFingerprint(
        dimensions=dimensions,
        channels=len(channel_names),
        channel_names=channel_names,
        modality=modality,
        modality_evidence=evidence,
        median_spacing=spacing,
        median_shape=shape,
        slicing_axis=axis,
        anisotropy=1.0 if dimensions == 2 else spacing[axis] / min(in_plane),
        labelled_cases=int(dataset["numTraining"]),
        unlabelled_cases=count_test_images(raw_folder, dataset),
        classes=class_statistics(raw_folder, dataset, axis),
    )


def count_test_images(raw_folder: Path, dataset: dict) -> int:
    channels = len(dataset["channel_names"])
    images = raw_folder / "imagesTs"
    if not images.is_dir():
        return 0
    return len(list(images.glob(f"*{dataset['file_ending']}"))) // channels


def class_statistics(
    raw_folder: Path, dataset: dict, axis: int
) -> tuple[ClassStatistics, ...]:
    """Voxel fraction and typical in-plane extent of each foreground class."""
    files = sorted((raw_folder / "labelsTr").glob(f"*{dataset['file_ending']}"))
    sample = [
        files[i]
        for i in np.linspace(
            0, len(files) - 1, min(len(files), MAX_LABEL_CASES)
        ).astype(int)
    ]
    foreground = {
        name: value
        for name, value in dataset["labels"].items()
        if isinstance(value, int) and value > 0
    }
    counts = dict.fromkeys(foreground, 0)
    extents: dict[str, list[np.ndarray]] = {name: [] for name in foreground}
    total = 0
    for path in tqdm(sample, desc="samnet fingerprint: labels", unit="case"):
        labels, info = read_image(path)
        volume = np.moveaxis(labels[0] if labels.ndim == 4 else labels, axis, 0)
        spacing = (
            (1.0, 1.0) if info.spacing is None else in_plane_mm(info.spacing, axis)
        )
        total += volume.size
        for name, value in foreground.items():
            mask = volume == value
            counts[name] += int(mask.sum())
            extents[name].append(slice_extents_mm(mask, spacing))
    return tuple(
        ClassStatistics(
            name=name,
            voxel_fraction=counts[name] / total,
            in_plane_extent_mm=float(np.median(np.concatenate(extents[name])))
            if counts[name]
            else 0.0,
        )
        for name in foreground
    )


def in_plane_mm(itk_spacing: tuple[float, ...], axis: int) -> tuple[float, float]:
    """The in-plane spacing (numpy order) of a volume sliced along numpy ``axis``."""
    spacing = tuple(reversed(itk_spacing))
    return tuple(s for a, s in enumerate(spacing) if a != axis)


def slice_extents_mm(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """For each slice of ``mask`` (Z x Y x X) that holds the class, the longer side of
    its bounding box in mm."""
    rows = mask.any(axis=2)
    columns = mask.any(axis=1)
    present = rows.any(axis=1)
    rows, columns = rows[present], columns[present]
    return np.maximum(span(rows) * spacing[0], span(columns) * spacing[1])


def span(occupied: np.ndarray) -> np.ndarray:
    """Per row of a boolean N x L array, last - first True index + 1 (rows hold a True)."""
    first = occupied.argmax(axis=1)
    last = occupied.shape[1] - 1 - occupied[:, ::-1].argmax(axis=1)
    return (last - first + 1).astype(float)
