"""The rules for what SAM sees of an image: slicing axis, input size, downsampling, patch,
resampling and intensity mapping.

Each returns its value and the reason for it (``Planner.decide`` records both); sizes are
in pixels, spacings in mm.
"""

from __future__ import annotations

import math

from samnet.models.backbone_spec import BackboneSpec
from samnet.planners.evidence import (
    MIN_OBJECT_CELLS,
    SMALL_INPUT_EVIDENCE,
    SMALL_INPUT_SIZE,
    SMALL_SLICE_PX,
)
from samnet.planners.fingerprint import SamFingerprint
from samnet.planners.hardware import Hardware


def slicing_reason(fp: SamFingerprint) -> str:
    """Why SAM slices along ``fp.slicing_axis``."""
    if fp.dimensions == 2:
        return "2D images"
    if fp.anisotropy >= 3:
        return f"the out-of-plane axis ({fp.median_spacing[fp.slicing_axis]:g} mm, {fp.anisotropy:.1f}x the in-plane spacing): slices keep the full in-plane resolution"
    return "isotropic enough that any axis works; nnU-Net's 2d configuration slices the same one"


def input_size_rule(
    fp: SamFingerprint, hw: Hardware, spec: BackboneSpec
) -> tuple[int, str]:
    """The square side the encoder sees: its native size, less for small slices on CPU."""
    longest = max(fp.in_plane_shape)
    if (
        not hw.on_gpu
        and longest <= SMALL_SLICE_PX
        and spec.native_size > SMALL_INPUT_SIZE
    ):
        return SMALL_INPUT_SIZE, (
            f"median slices are {longest} px: upsampling them to {spec.native_size} px adds no detail and costs "
            f"{(spec.native_size / SMALL_INPUT_SIZE) ** 2:.0f}x the encoder compute on CPU; {SMALL_INPUT_EVIDENCE}"
        )
    return spec.native_size, f"the size {spec.name} was pre-trained at"


def downsampling_rule(
    fp: SamFingerprint, spec: BackboneSpec, input_size: int
) -> tuple[float, str]:
    """In-plane factor by which slices are made coarser so the encoder sees more of them."""
    longest = max(fp.in_plane_shape)
    if longest <= input_size:
        return (
            1.0,
            f"median slices ({longest} px) fit the {input_size} px input: native spacing",
        )
    smallest = fp.smallest_class
    cell_px = spec.embedding_stride * spec.native_size / input_size
    smallest_px = smallest.in_plane_extent_mm / min(fp.in_plane_spacing)
    limit = max(1.0, smallest_px / (MIN_OBJECT_CELLS * cell_px))
    factor = min(longest / input_size, limit)
    if factor == 1:
        return factor, (
            f"the smallest structure ({smallest.name}, {smallest.in_plane_extent_mm:.0f} mm) would lose "
            f"its {MIN_OBJECT_CELLS} embedding cells if coarsened: native spacing, sliding windows"
        )
    if factor < longest / input_size:
        return factor, (
            f"the smallest structure ({smallest.name}, {smallest.in_plane_extent_mm:.0f} mm) must keep "
            f"{MIN_OBJECT_CELLS} embedding cells: coarsen only {factor:.2f}x and slide windows over the rest"
        )
    return (
        factor,
        f"the whole median slice ({longest} px) in one {input_size} px input; the smallest structure ({smallest.name}) keeps >= {MIN_OBJECT_CELLS} embedding cells",
    )


def patch_rule(
    fp: SamFingerprint, input_size: int, downsampling: float
) -> tuple[tuple[int, int], str]:
    """nnU-Net's square patch: the downsampled median slice, at most the encoder input."""
    side = min(input_size, round_up(max(fp.in_plane_shape) / downsampling, 8))
    return (side, side), (
        "square, so the resize to the encoder input keeps the aspect ratio: "
        + (
            "the whole median slice"
            if side < input_size
            else "windows of the encoder input size, predicted by sliding window"
        )
    )


def resampling_text(patch: tuple[int, int], input_size: int) -> str:
    """How images reach the plan's spacing, then the encoder input."""
    return (
        "nnU-Net's 2d resampling (3rd-order spline images, linear labels); "
        f"patches {patch[0]} x {patch[1]} resized bilinearly to {input_size} x {input_size} in the network"
    )


def intensity_reason(fp: SamFingerprint, spec: BackboneSpec) -> str:
    """Why the intensities are mapped to ``spec.normalization``."""
    scheme = (
        "CT: nnU-Net's global percentile clip and z-score"
        if fp.modality == "CT"
        else "nnU-Net's per-image z-score"
    )
    target = (
        "each slice min-max scaled (0.5-99.5 percentiles) to [0, 1]"
        if spec.normalization == "unit_range"
        else "0..255 RGB standardised with SAM's pixel mean and std"
    )
    return f"{scheme}, then {target}, what {spec.name} was pre-trained on"


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)
