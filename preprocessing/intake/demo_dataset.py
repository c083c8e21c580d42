"""A small deterministic synthetic MR-like 3D dataset, so samnet runs with no data at hand.

Each volume holds one elongated, bent structure split across its long axis into two
touching labels (like the hippocampus' head and body), embedded in textured tissue
with Rician-like noise and a smooth multiplicative bias field.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from samnet.core.atomic import atomic_folder
from samnet.preprocessing.intake.raw_dataset import (
    raw_dataset_target,
    write_dataset_json,
)

DEMO_NAME = "SamnetDemo"
DEMO_ID = 990
SPACING_MM = (1.0, 1.0, 1.0)


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float
) -> np.ndarray:
    """Zero-mean, unit-sd random field smoothed with a Gaussian of ``sigma`` voxels."""
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / (field.std() + 1e-8)


def make_case(
    rng: np.random.Generator, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """One volume and its labels, both ``shape`` (z, y, x): float32 intensities, uint8 labels in {0, 1, 2}."""
    grid = np.stack(
        np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    )
    center = np.array(shape, dtype=np.float32) / 2 + rng.uniform(-3, 3, size=3)
    radii = np.array(
        [rng.uniform(4.0, 5.5), rng.uniform(4.0, 5.5), rng.uniform(11.0, 14.0)]
    )
    offset = grid - center[:, None, None, None]
    # Bend the long (x) axis so the two parts are not mirror images of each other.
    bend = rng.uniform(0.02, 0.05) * offset[2] ** 2
    offset[1] = offset[1] - bend
    boundary = smooth_field(rng, shape, sigma=3.0) * 0.15
    inside = ((offset / radii[:, None, None, None]) ** 2).sum(axis=0) < 1.0 + boundary
    split = rng.uniform(-2.0, 2.0)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[inside & (offset[2] < split)] = 1
    labels[inside & (offset[2] >= split)] = 2

    tissue = 400 + 60 * smooth_field(rng, shape, sigma=2.0)
    tissue[labels == 1] += rng.uniform(180, 240)
    tissue[labels == 2] += rng.uniform(120, 170)
    tissue = gaussian_filter(tissue, 0.7)
    bias = np.exp(0.15 * smooth_field(rng, shape, sigma=10.0))
    noise_sd = rng.uniform(25, 40)
    real = tissue * bias + rng.normal(0, noise_sd, shape)
    imaginary = rng.normal(0, noise_sd, shape)
    image = np.sqrt(real**2 + imaginary**2).astype(np.float32)
    return image, labels


def write_nifti(array: np.ndarray, path: str) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_MM)
    sitk.WriteImage(image, path, useCompression=True)


def write_demo_dataset(
    dataset_id: int = DEMO_ID,
    num_training: int = 20,
    num_test: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """Write ``DatasetNNN_SamnetDemo`` into nnUNet_raw and return its path; identical for equal arguments."""
    target = raw_dataset_target(dataset_id, DEMO_NAME)
    rng = np.random.default_rng(seed)
    with atomic_folder(target, overwrite=overwrite) as folder:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (folder / sub).mkdir()
        for index in range(num_training + num_test):
            shape = tuple(int(s) for s in rng.integers([30, 36, 36], [38, 46, 46]))
            image, labels = make_case(rng, shape)
            case = f"demo_{index:03d}"
            if index < num_training:
                write_nifti(image, str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
                write_nifti(labels, str(folder / "labelsTr" / f"{case}.nii.gz"))
            else:
                write_nifti(image, str(folder / "imagesTs" / f"{case}_0000.nii.gz"))
        metadata = {
            "name": DEMO_NAME,
            "description": "samnet's synthetic MR-like demo: two touching structures, noise and bias field",
            "licence": "CC0 (synthetic)",
        }
        labels = {"background": 0, "part_a": 1, "part_b": 2}
        write_dataset_json(folder, ["MRI"], labels, num_training, ".nii.gz", metadata)
    return str(target)
