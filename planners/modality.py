"""The imaging modality family of a dataset, from its channel names and intensities.

Names come first when they are known ones (nnU-Net's "CT" convention, MRI sequence
names, colour channels); otherwise the intensities decide: only CT stores values far
below zero (Hounsfield units, air at -1000), 8-bit ranges mean photographs or
radiographs, and non-negative volumes in arbitrary units are taken as MRI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

NAMED_MODALITIES = {
    "CT": {"ct", "hu", "cect", "ncct", "cta"},
    "MRI": {
        "mr",
        "mri",
        "t1",
        "t2",
        "t1w",
        "t2w",
        "flair",
        "adc",
        "dwi",
        "t1gd",
        "t1c",
        "t1ce",
        "pd",
        "dce",
        "swi",
        "bold",
    },
    "X-ray": {"xray", "x-ray", "cxr", "radiograph", "dx", "cr", "mammography", "mg"},
    "ultrasound": {"us", "ultrasound", "echo", "sonography"},
    "RGB": {
        "r",
        "g",
        "b",
        "red",
        "green",
        "blue",
        "rgb",
        "endoscopy",
        "dermoscopy",
        "photo",
    },
    "PET": {"pet", "suv"},
}
# Air is -1000 HU; no other modality's files hold values this far below zero.
HU_AIR_THRESHOLD = -500.0


def detect_modality(
    channel_names: Sequence[str],
    intensity_per_channel: Mapping[str, Mapping[str, float]],
    dimensions: int,
) -> tuple[str, str]:
    """The modality family and the evidence for it.

    Arguments:
      channel_names: dataset.json's channel names in channel order.
      intensity_per_channel: nnU-Net's ``foreground_intensity_properties_per_channel``
        (keys "0", "1", ...; each with ``min``, ``max``, ``percentile_00_5``, ...).
      dimensions: 2 or 3.
    """
    named = [modality_named(name) for name in channel_names]
    if named[0] is not None and all(n == named[0] for n in named):
        return named[0], f"channel names {list(channel_names)}"
    lowest = min(p["min"] for p in intensity_per_channel.values())
    highest = max(p["max"] for p in intensity_per_channel.values())
    if lowest <= HU_AIR_THRESHOLD:
        return (
            "CT",
            f"intensities down to {lowest:.0f} (Hounsfield units: air is -1000)",
        )
    eight_bit = lowest >= 0 and highest <= 255
    if eight_bit and len(channel_names) == 3:
        return "RGB", "3 channels in 0..255 (a colour photograph or video frame)"
    if eight_bit and dimensions == 2:
        return (
            "X-ray",
            "2D single-channel images in 0..255 (a radiograph-like greyscale image)",
        )
    return (
        "MRI",
        f"non-negative intensities in arbitrary units ({lowest:.0f}..{highest:.0f}), not HU",
    )


def modality_named(channel_name: str) -> str | None:
    """The modality a channel name states, e.g. "T1Gd" -> "MRI", or None."""
    words = set(re.split(r"[^a-z0-9-]+", channel_name.lower())) | {channel_name.lower()}
    for modality, names in NAMED_MODALITIES.items():
        if words & names:
            return modality
    return None
