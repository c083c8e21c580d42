"""``samnet_demo_dataset``: write samnet's synthetic demo dataset into nnUNet_raw.

What it holds: :mod:`samnet.preprocessing.intake.demo_dataset`.
"""

from __future__ import annotations

import argparse

from samnet.core.errors import cli_entry
from samnet.preprocessing.intake import demo_dataset
from samnet.preprocessing.intake.raw_dataset import raw_dataset_target


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samnet_demo_dataset", description=demo_dataset.__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--id",
        type=int,
        default=demo_dataset.DEMO_ID,
        help=f"dataset id (default {demo_dataset.DEMO_ID})",
    )
    parser.add_argument("--num-training", type=int, default=20)
    parser.add_argument(
        "--num-test", type=int, default=4, help="unlabelled images written to imagesTs"
    )
    parser.add_argument("--seed", type=int, default=0)
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing dataset with this id",
    )
    existing.add_argument(
        "--exist-ok",
        action="store_true",
        help="keep an existing dataset with this id and stop",
    )
    args = parser.parse_args(argv)
    target = raw_dataset_target(args.id, demo_dataset.DEMO_NAME)
    if args.exist_ok and target.exists():
        print(f"kept {target} (exists)")
        return 0
    path = demo_dataset.write_demo_dataset(
        args.id, args.num_training, args.num_test, args.seed, args.overwrite
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
