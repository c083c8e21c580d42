"""Check the files of one case: readable, channels as declared, on one grid, sane values."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samnet.core.errors import SamnetError
from samnet.preprocessing.checks.dataset_json import DatasetSpec, Problem
from samnet.preprocessing.intake.image_io import ImageInfo, read_image, read_image_info

# nnU-Net's SimpleITK reader refuses channels whose spacings differ beyond np.allclose's
# defaults, so spacing gets exactly that tolerance. Origin and direction only make
# nnU-Net warn; a thousandth of a voxel (origin) and of a unit vector (direction) is far
# below any real misalignment, yet above the float32 rounding of NIfTI headers.
ORIGIN_TOLERANCE_IN_VOXELS = 1e-3
DIRECTION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class _LoadedFile:
    path: Path
    info: ImageInfo
    pixels: np.ndarray | None  # None when only the header was read


def case_problems(
    case: str,
    channel_files: dict[int, Path],
    label: Path | None,
    spec: DatasetSpec,
    read_pixels: bool,
) -> Iterator[Problem]:
    """Every problem in one case's files.

    ``channel_files`` maps channel index to image file; ``label`` is None for test
    cases. Files are read once; ``read_pixels=False`` reads headers only.
    """
    if not channel_files:
        return
    image_folder = next(iter(channel_files.values())).parent
    if spec.channel_names is not None:
        yield from _undeclared_channel_problems(channel_files, spec.channel_names)
        channel_files = {
            index: path
            for index, path in channel_files.items()
            if index < len(spec.channel_names)
        }

    image_paths = [channel_files[index] for index in sorted(channel_files)]
    loaded: dict[Path, _LoadedFile] = {}
    for path in [*image_paths, *([label] if label else [])]:
        try:
            loaded[path] = _load(path, read_pixels)
        except SamnetError as error:
            yield Problem.from_error(error)
    images = [loaded[path] for path in image_paths if path in loaded]
    label_file = loaded.get(label) if label else None

    if spec.channel_names is not None:
        yield from _channel_count_problems(
            case, channel_files, loaded, spec, image_folder
        )
    if label_file and label_file.info.channels != 1:
        yield Problem(
            label_file.path,
            f"holds {label_file.info.channels} channels; a label file holds one",
            "save it as a single-channel image of class indices "
            "(convert RGB or palette PNGs to class indices first)",
        )
    if images:
        for other in images[1:] + ([label_file] if label_file else []):
            yield from _grid_problems(images[0], other)
    for image in images:
        if image.pixels is not None:
            yield from _nonfinite_problems(image.path, image.pixels)
    if label_file and label_file.pixels is not None and label_file.info.channels == 1:
        yield from _label_value_problems(
            label_file.path, label_file.pixels, spec.label_values
        )


def _load(path: Path, read_pixels: bool) -> _LoadedFile:
    if read_pixels:
        pixels, info = read_image(path)
        return _LoadedFile(path, info, pixels)
    return _LoadedFile(path, read_image_info(path), None)


def _undeclared_channel_problems(
    channel_files: dict[int, Path], channel_names: tuple[str, ...]
) -> Iterator[Problem]:
    for index, path in sorted(channel_files.items()):
        if index >= len(channel_names):
            yield Problem(
                path,
                f"unexpected file: channel index {index:04d}, but dataset.json declares "
                f"{len(channel_names)} channel(s) ({', '.join(channel_names)})",
                f'remove the file, or declare the channel in channel_names ("{index}": "NAME")',
            )


def _channel_count_problems(
    case: str,
    channel_files: dict[int, Path],
    loaded: dict[Path, _LoadedFile],
    spec: DatasetSpec,
    image_folder: Path,
) -> Iterator[Problem]:
    """The channels of a case must add up to those declared in channel_names.

    One file per channel is the rule; a file holding several channels (an RGB PNG, a
    4D NIfTI) counts for all of them, as in nnU-Net's readers. An unreadable file
    counts as one channel: it is reported on its own.
    """
    declared = spec.channel_names
    counts = {
        path: loaded[path].info.channels if path in loaded else 1
        for path in channel_files.values()
    }
    if sum(counts.values()) == len(declared):
        return
    several = {path: count for path, count in counts.items() if count > 1}
    for path, count in several.items():
        yield Problem(
            path,
            f"holds {count} channels, which gives case {case} {sum(counts.values())} "
            f"where dataset.json declares {len(declared)} ({', '.join(declared)})",
            f"store the declared channels one per file ({case}_XXXX{spec.file_ending}), "
            "or declare every channel the file holds in channel_names",
        )
    if several:
        return
    for index, name in enumerate(declared):
        if index not in channel_files:
            yield Problem(
                image_folder / f"{case}_{index:04d}{spec.file_ending}",
                f"missing image channel {index:04d} ({name}) of case {case}",
                "add the file: every case needs every channel declared in channel_names",
            )


def _grid_problems(reference: _LoadedFile, other: _LoadedFile) -> Iterator[Problem]:
    """``other`` must have the size and geometry of ``reference`` (a case's channel 0)."""
    fix = (
        f"put {other.path.name} on the voxel grid of {reference.path.name}: resample it, "
        "or, if only its header is wrong, copy the geometry over "
        "(SimpleITK: image.CopyInformation(reference))"
    )
    if other.info.size != reference.info.size:
        yield Problem(
            other.path,
            f"shape {_format_size(other.info.size)} does not match "
            f"{_format_size(reference.info.size)} of {reference.path.name}",
            fix,
        )
    for name in _geometry_mismatches(reference.info, other.info):
        yield Problem(
            other.path,
            f"{name} {_format_numbers(getattr(other.info, name))} does not match "
            f"{_format_numbers(getattr(reference.info, name))} of {reference.path.name}",
            fix,
        )


def _geometry_mismatches(reference: ImageInfo, other: ImageInfo) -> list[str]:
    """Names of the geometry properties ("spacing", "origin", "direction") that differ."""
    if reference.spacing is None or other.spacing is None:
        return []
    if len(reference.spacing) != len(other.spacing):
        return []  # already reported as a shape mismatch
    voxel = min(abs(s) for s in reference.spacing)
    matches = {
        "spacing": np.allclose(other.spacing, reference.spacing),
        "origin": np.allclose(
            other.origin,
            reference.origin,
            rtol=0,
            atol=ORIGIN_TOLERANCE_IN_VOXELS * voxel,
        ),
        "direction": np.allclose(
            other.direction, reference.direction, rtol=0, atol=DIRECTION_TOLERANCE
        ),
    }
    return [name for name, match in matches.items() if not match]


def _nonfinite_problems(path: Path, pixels: np.ndarray) -> Iterator[Problem]:
    if pixels.dtype.kind != "f":
        return
    for name, is_bad in (("NaN", np.isnan), ("Inf", np.isinf)):
        count = int(np.count_nonzero(is_bad(pixels)))
        if count:
            yield Problem(
                path,
                f"contains {count} {name} intensity value(s)",
                "replace them with finite values (e.g. the image minimum) when converting: "
                "nnU-Net reads them as 0 from NIfTI files and as NaN from others, which "
                "breaks intensity normalization",
            )


def _label_value_problems(
    path: Path, pixels: np.ndarray, declared: frozenset[int] | None
) -> Iterator[Problem]:
    """Label voxels must be integers (float32 files of whole numbers are fine) declared in dataset.json."""
    values = np.unique(pixels).astype(np.float64)
    whole = np.isfinite(values) & (values == np.round(values))
    if not whole.all():
        yield Problem(
            path,
            f"holds non-integer label values ({_format_values(values[~whole])})",
            "labels are class indices: re-export the label map without interpolation "
            "(nearest neighbour) or round it",
        )
    if declared is None:
        return
    undeclared = sorted(set(values[whole].astype(np.int64).tolist()) - declared)
    if undeclared:
        yield Problem(
            path,
            f"holds label values not declared in dataset.json: {_format_values(undeclared)} "
            f"(declared: {sorted(declared)})",
            'declare them in dataset.json "labels", or remove them from the label file',
        )


def _format_size(size: Iterable[int]) -> str:
    return "x".join(str(s) for s in size)


def _format_numbers(numbers: Iterable[float]) -> str:
    # + 0.0 prints -0.0, common in direction matrices, as 0
    return "(" + ", ".join(f"{n + 0.0:.6g}" for n in numbers) + ")"


def _format_values(values: Iterable[float], limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown if len(values) <= limit else f"{shown}, ... ({len(values)} in all)"
