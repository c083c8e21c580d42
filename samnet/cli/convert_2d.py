"""``samnet_convert_2d``: a folder of 2D images and a folder of same-named masks into an nnU-Net dataset.

How: :mod:`samnet.preprocessing.intake.convert_2d`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from samnet.core.errors import cli_entry
from samnet.preprocessing.intake.convert_2d import convert_2d


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="samnet_convert_2d",
        description="Convert a folder of 2D images (PNG/JPEG/TIFF/BMP, grayscale or RGB) "
        "and a folder of same-named masks into nnUNet_raw/DatasetNNN_Name.",
    )
    add = parser.add_argument
    add("--images", type=Path, required=True, help="folder of images")
    add(
        "--labels", type=Path, required=True, help="folder of masks named as the images"
    )
    add("--name", required=True, help="dataset name: letters, digits, underscores")
    add("--id", type=int, required=True, dest="dataset_id", help="dataset id, 1..999")
    add(
        "--modality",
        help="channel name of grayscale images, e.g. X-ray (default: gray)",
    )
    add(
        "--label-names",
        type=lambda text: [name.strip() for name in text.split(",")],
        help="class names in id order, e.g. background,right_lung,left_lung "
        "(default: background,class_1,...)",
    )
    add(
        "--overwrite",
        action="store_true",
        help="replace an existing dataset of that name",
    )
    args = parser.parse_args(argv)
    convert_2d(
        args.images,
        args.labels,
        args.name,
        args.dataset_id,
        args.modality,
        args.label_names,
        args.overwrite,
    )


if __name__ == "__main__":
    raise SystemExit(main())
