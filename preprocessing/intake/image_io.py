"""Read image files as nnU-Net will: SimpleITK for medical formats, skimage for 2D ones.

Every reader gives an :class:`ImageInfo` (size, channel count, geometry) and, when
pixels are asked for, an array of shape ``(C, *spatial)`` in numpy axis order
(``z, y, x`` or ``y, x``), channels counted as nnU-Net counts them. A file that cannot
be read raises a :class:`~samnet.core.errors.SamnetError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samnet.core.errors import SamnetError

NATURAL_IMAGE_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
NIFTI_ENDINGS = (".nii.gz", ".nii")
# The endings nnU-Net 2.x has a reader for in a raw dataset, less its 3D-TIFF reader
# (".tiff"), which needs a spacing file next to every image. JPEG is not among them:
# lossy compression corrupts label maps.
NNUNET_FILE_ENDINGS = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".mha",
    ".gipl",
    ".png",
    ".bmp",
    ".tif",
)


@dataclass(frozen=True)
class ImageInfo:
    """What one image file holds, in SimpleITK's axis order (``x, y[, z]``).

    Natural 2D images (PNG, BMP, TIFF, JPEG) have no geometry: ``spacing``, ``origin``
    and ``direction`` are None for them.
    """

    size: tuple[int, ...]
    channels: int
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None  # row-major D x D matrix


def is_natural_image(path: Path) -> bool:
    return path.name.lower().endswith(NATURAL_IMAGE_ENDINGS)


def read_image_info(path: Path) -> ImageInfo:
    """The header of an image file, without reading its pixels.

    Natural 2D images are small, so they are decoded in full: only the decoded array
    tells how many channels nnU-Net will see (a palette PNG becomes RGB).
    """
    if is_natural_image(path):
        return read_image(path)[1]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with read_errors_named(path):
        reader.ReadImageInformation()
    return _sitk_info(
        reader.GetSize(),
        reader.GetNumberOfComponents(),
        reader.GetSpacing(),
        reader.GetOrigin(),
        reader.GetDirection(),
    )


def read_image(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """Pixels of shape ``(C, *spatial)`` (numpy axis order) and the file's :class:`ImageInfo`."""
    if is_natural_image(path):
        read = _read_natural_image
    elif path.name.lower().endswith(NIFTI_ENDINGS):
        read = _read_nifti
    else:
        read = _read_sitk_image
    with read_errors_named(path):
        return read(path)


def _read_nifti(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """Geometry from ITK, as nnU-Net reads it; pixels from nibabel.

    ITK's NIfTI reader turns NaN and Inf into 0 and fills the missing part of a
    truncated file with zeros, hiding both; nibabel shows the first and refuses the second.
    """
    import nibabel  # imported here: only NIfTI datasets pay for it

    info = read_image_info(path)
    # nibabel's axes (x, y, z[, t][, 1, components]), reversed, are ITK's
    pixels = np.asanyarray(nibabel.load(path).dataobj).T
    return pixels.reshape(info.channels, *info.size[::-1]), info


def _read_sitk_image(path: Path) -> tuple[np.ndarray, ImageInfo]:
    image = sitk.ReadImage(str(path))
    info = _sitk_info(
        image.GetSize(),
        image.GetNumberOfComponentsPerPixel(),
        image.GetSpacing(),
        image.GetOrigin(),
        image.GetDirection(),
    )
    pixels = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        pixels = np.moveaxis(pixels, -1, 0)
    return pixels.reshape(info.channels, *info.size[::-1]), info


def _sitk_info(
    size: tuple[int, ...],
    components: int,
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: tuple[float, ...],
) -> ImageInfo:
    dimension = len(size)
    if dimension < 4:
        return ImageInfo(tuple(size), components, spacing, origin, direction)
    # nnU-Net reads a 4D file as one channel per volume along the fourth axis.
    spatial_direction = np.reshape(direction, (dimension, dimension))[:3, :3]
    return ImageInfo(
        tuple(size[:3]),
        size[3] * components,
        tuple(spacing[:3]),
        tuple(origin[:3]),
        tuple(spatial_direction.ravel().tolist()),
    )


def _read_natural_image(path: Path) -> tuple[np.ndarray, ImageInfo]:
    from skimage import io  # imported here: only 2D datasets pay for it

    pixels = io.imread(str(path))
    if pixels.ndim == 2:
        pixels = pixels[None]
    elif pixels.ndim == 3:
        # channels last, as nnU-Net's NaturalImage2DIO assumes
        pixels = np.moveaxis(pixels, -1, 0)
    else:
        raise SamnetError(
            path,
            f"has {pixels.ndim} dimensions (shape {pixels.shape}); "
            "a 2D image file holds height x width [x channels]",
            "store 3D data as NIfTI (.nii.gz) instead of a stack of 2D frames",
        )
    return pixels, ImageInfo(size=pixels.shape[:0:-1], channels=pixels.shape[0])


@contextmanager
def read_errors_named(path: Path) -> Iterator[None]:
    """Turn any reader failure into a :class:`SamnetError` naming ``path``."""
    if path.is_file() and path.stat().st_size == 0:
        raise SamnetError(
            path, "is empty (0 bytes)", "copy, download or re-export the file again"
        )
    try:
        yield
    except SamnetError:
        raise
    except EOFError:
        raise SamnetError(
            path,
            "is truncated: its compressed data ends early",
            "copy, download or re-export the file again; "
            "an interrupted transfer leaves files like this",
        ) from None
    # Image libraries signal corrupt files with many exception types (OSError,
    # RuntimeError, ValueError, zlib.error, SyntaxError, ...).
    except Exception as error:
        raise SamnetError(
            path,
            f"cannot be read as an image ({_describe(error)})",
            "check that the file is a complete image in the format its name says; "
            "copy, download or re-export it again",
        ) from error


def _describe(error: BaseException) -> str:
    """An error's message on one line, without SimpleITK's C++ source location."""
    lines = [line.strip() for line in str(error).splitlines()]
    lines = [
        line for line in lines if line and not line.startswith("Exception thrown in")
    ]
    return " ".join(lines).removeprefix("sitk::ERROR: ") or type(error).__name__
