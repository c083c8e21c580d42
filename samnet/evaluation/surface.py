"""Normalized surface Dice (NSD) and HD95 per case and class, computed with MONAI.

Each validation segmentation is scored against ``nnUNet_preprocessed/<Dataset>/gt_segmentations``,
both read with the reader class of the model's plans, as nnU-Net's ``compute_metrics_on_folder``
reads them, so that distances are in the image's spacing: mm for NIfTI volumes; for 2D images
(PNG), which nnU-Net reads with spacing 1, pixels. Axes of size 1 (the dummy axis of a 2D
image) are dropped first, so a 2D image is scored in 2D.

- NSD: ``monai.metrics.compute_surface_dice`` with ``use_subvoxels=True`` (the surface-element
  definition of Nikolov et al. 2021, DeepMind's ``surface-distance``): the share of both
  surfaces within the tolerance (mm) of the other.
- HD95: ``monai.metrics.compute_hausdorff_distance(percentile=95)``: the larger of the two
  directed 95th-percentile surface distances, in mm.

Per case and class: a class absent from both reference and prediction is undefined (None)
and skipped, as Dice is; absent from one only, NSD is 0 and HD95 undefined (MONAI gives NaN:
there is no surface to measure to), so HD95 leaves such a miss out of its means and tests
while NSD and Dice count it as 0. Voxels of nnU-Net's ignore label are removed from both
masks, as nnU-Net does for Dice.

A folder's values are cached in ``SURFACE_METRICS_FILE`` and recomputed only when the
folder's validation ``summary.json`` is newer, or the tolerance or the classes changed.

MONAI measures surface distances on a CPU with scipy's KDTree, which crashes the process
(segmentation fault, scipy 1.17) building trees of some voxel grids while denormal floats
are flushed to zero, as every samnet command sets (``samnet.core.cpu_numerics``): the
metrics are computed with denormals kept (``denormals_kept``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samnet.core.atomic import atomic_file
from samnet.evaluation.stats import finite_or_none

SURFACE_METRICS = ("nsd", "hd95")
HD95_PERCENTILE = 95
NO_TOLERANCE = (
    "no NSD tolerance: no plans.json with the dataset's spacing in the model folders "
    "(give samnet_compare --nsd-tolerance MM)"
)
SURFACE_NOTE = (
    "NSD (normalized surface Dice: the share of both surfaces within the tolerance of the "
    "other) and HD95 (the larger of the two directed 95th-percentile surface distances) per "
    "volume, computed with MONAI from each validation segmentation and nnU-Net's reference, "
    "in the images' spacing (mm; pixels for 2D PNG images). A class absent from both "
    "reference and prediction is skipped, as for Dice; absent from one only, NSD is 0 and "
    "HD95 is undefined (MONAI gives NaN), so HD95's means and tests leave that case out and "
    "its table counts such cases as undefined."
)


@dataclass(frozen=True)
class SurfaceSettings:
    """What every surface computation of one report shares.

    Attributes:
      gt_folder: nnU-Net's reference segmentations of the dataset.
      labels: the foreground labels scored, as strings ("1", "2", ...).
      file_ending: the dataset's file ending (".nii.gz", ".png").
      tolerance_mm: the NSD tolerance, the same for every class.
    """

    gt_folder: Path
    labels: tuple[str, ...]
    file_ending: str
    tolerance_mm: float


def default_tolerance(plans: dict) -> float:
    """One voxel at the dataset's median in-plane spacing: not tuned to any dataset.

    The larger of the two in-plane entries of the plans' ``original_median_spacing_after_transp``
    (``transpose_forward`` puts the out-of-plane axis first; a 2D dataset's dummy axis is
    that first entry, 999).
    """
    return float(max(plans["original_median_spacing_after_transp"][1:]))


def surface_settings(
    gt_folder: Path,
    model_folders: list[Path],
    labels: list[str],
    file_ending: str,
    tolerance_mm: float | None,
) -> tuple[SurfaceSettings | str, dict]:
    """The report's surface settings (or why it has none) and what report.json says of them.

    ``tolerance_mm``: the user's NSD tolerance, or None for ``default_tolerance`` of the first
    model folder's plans (every plans of a dataset shares its fingerprint's spacing).
    """
    rule = "set with samnet_compare --nsd-tolerance"
    if tolerance_mm is None:
        plans_files = [f / "plans.json" for f in model_folders]
        plans = [json.loads(f.read_text()) for f in plans_files if f.is_file()]
        with_spacing = [p for p in plans if "original_median_spacing_after_transp" in p]
        if with_spacing:
            in_plane = with_spacing[0]["original_median_spacing_after_transp"][1:]
            tolerance_mm = default_tolerance(with_spacing[0])
            rule = (
                "default: one voxel at the dataset's median in-plane spacing "
                f"({' x '.join(f'{s:g}' for s in in_plane)} mm), not tuned to the dataset; "
                "samnet_compare --nsd-tolerance MM sets another"
            )
    record = {
        "nsd_tolerance_mm": tolerance_mm,
        "nsd_tolerance_rule": rule if tolerance_mm is not None else None,
        "definition": SURFACE_NOTE,
    }
    if tolerance_mm is None:
        return NO_TOLERANCE, record
    return SurfaceSettings(gt_folder, tuple(labels), file_ending, tolerance_mm), record


def denormals_flushed() -> bool:
    """Whether this thread computes denormal floats as zero (``torch.set_flush_denormal``)."""
    return bool(np.finfo(np.float32).smallest_subnormal * np.float32(2) == 0)


@contextmanager
def denormals_kept() -> Iterator[None]:
    """Compute with denormal floats kept in this thread; restore the thread's setting after."""
    import torch  # heavy: keeps samnet_compare --help fast

    flushed = denormals_flushed()
    torch.set_flush_denormal(False)
    try:
        yield
    finally:
        torch.set_flush_denormal(flushed)


def case_surface_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int],
    tolerance_mm: float,
    ignore_label: int | None = None,
) -> dict[str, dict[str, float | None]]:
    """NSD and HD95 of each class of one case: ``{"nsd": {"1": v, ...}, "hd95": {...}}``.

    ``reference`` and ``prediction`` are label maps of one shape (2 or 3 spatial axes after
    dropping those of size 1); ``spacing`` gives mm per voxel along each axis.
    """
    # heavy: keeps samnet_compare --help fast
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    kept = [axis for axis, size in enumerate(reference.shape) if size > 1]
    shape = [reference.shape[axis] for axis in kept]
    reference, prediction = reference.reshape(shape), prediction.reshape(shape)
    counted = (
        np.ones(shape, dtype=bool)
        if ignore_label is None
        else reference != ignore_label
    )

    def one_hot(segmentation: np.ndarray) -> torch.Tensor:
        """``1 x classes x spatial``: MONAI's batch-first one-hot layout."""
        masks = [(segmentation == label) & counted for label in labels]
        return torch.from_numpy(np.stack(masks)[None])

    spacing_kept = [float(spacing[axis]) for axis in kept]
    with warnings.catch_warnings(), denormals_kept():
        # MONAI warns about every empty mask; empty classes are handled as the docstring says.
        warnings.simplefilter("ignore")
        nsd = compute_surface_dice(
            one_hot(prediction),
            one_hot(reference),
            [tolerance_mm] * len(labels),
            include_background=True,
            spacing=spacing_kept,
            use_subvoxels=True,
        )[0]
        hd95 = compute_hausdorff_distance(
            one_hot(prediction),
            one_hot(reference),
            include_background=True,
            percentile=HD95_PERCENTILE,
            spacing=spacing_kept,
        )[0]
    return {
        name: {str(label): finite_or_none(float(v)) for label, v in zip(labels, values)}
        for name, values in (("nsd", nsd), ("hd95", hd95))
    }


def segmentation_file(folder: Path, case: str, settings: SurfaceSettings) -> Path:
    return folder / f"{case}{settings.file_ending}"


def missing_surface_inputs(
    segmentation_folder: Path,
    model_folder: Path,
    cases: list[str],
    settings: SurfaceSettings,
) -> str | None:
    """Why NSD and HD95 cannot be computed for these cases, or None when they can."""
    if not (model_folder / "plans.json").is_file():
        return f"they need the plans nnU-Net copies into {model_folder}"
    for folder, kind in (
        (settings.gt_folder, "reference"),
        (segmentation_folder, "validation"),
    ):
        absent = [
            c for c in cases if not segmentation_file(folder, c, settings).is_file()
        ]
        if absent:
            return (
                f"they need the {kind} segmentations in {folder} "
                f"({absent[0]}{settings.file_ending} is missing)"
            )
    return None


def read_cache(
    cache_file: Path, summary_file: Path, cases: list[str], settings: SurfaceSettings
) -> dict[str, dict] | None:
    """The cached values of ``cases``, or None when the cache is absent or stale."""
    if not cache_file.is_file():
        return None
    if summary_file.is_file() and (
        summary_file.stat().st_mtime_ns >= cache_file.stat().st_mtime_ns
    ):
        return None
    cache = json.loads(cache_file.read_text())
    if cache["tolerance_mm"] != settings.tolerance_mm or cache["labels"] != list(
        settings.labels
    ):
        return None
    if not set(cases) <= set(cache["cases"]):
        return None
    return {case: cache["cases"][case] for case in cases}


def folder_surface_metrics(
    segmentation_folder: Path,
    cache_file: Path,
    model_folder: Path,
    cases: list[str],
    settings: SurfaceSettings,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """NSD and HD95 per case of one folder of validation segmentations, by case id.

    ``model_folder`` holds the ``plans.json`` and ``dataset.json`` nnU-Net copied into the
    trained model: its reader class reads the images, its label manager gives the ignore
    label. Check ``missing_surface_inputs`` first.
    """
    cached = read_cache(
        cache_file, segmentation_folder / "summary.json", cases, settings
    )
    if cached is not None:
        return cached
    # nnunetv2 reads the nnUNet_* variables at import: after configure_environment().
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(str(model_folder / "plans.json"))
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    ignore_label = plans_manager.get_label_manager(dataset_json).ignore_label
    reader = plans_manager.image_reader_writer_class()
    labels = [int(label) for label in settings.labels]
    values = {}
    for case in cases:
        reference, properties = reader.read_seg(
            str(segmentation_file(settings.gt_folder, case, settings))
        )
        prediction, _ = reader.read_seg(
            str(segmentation_file(segmentation_folder, case, settings))
        )
        values[case] = case_surface_metrics(
            reference[0],
            prediction[0],
            properties["spacing"],
            labels,
            settings.tolerance_mm,
            ignore_label,
        )
    record = {
        "tolerance_mm": settings.tolerance_mm,
        "labels": list(settings.labels),
        "cases": values,
    }
    with atomic_file(cache_file) as handle:
        handle.write(json.dumps(record).encode())
    return values
