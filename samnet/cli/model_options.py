"""The command-line options ``samnet_predict`` and ``samnet_export_msd`` share: which model, how."""

from __future__ import annotations

import argparse
from pathlib import Path

from samnet.cli.options import add_device_argument
from samnet.core.layout import FINAL_CHECKPOINT
from samnet.core.paths import configure_environment
from samnet.inference.run import Options
from samnet.inference.selection import Selection, find_trained_dataset, select_models


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options samnet_predict and samnet_export_msd share: which model, folds, device."""
    parser.add_argument(
        "-d", "--dataset", required=True, help="DatasetNNN, its full name or its id"
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=["best"],
        metavar="best|TRAINER:PLANS:CONFIG",
        help="'best' (default): the configuration samnet_compare chose, single model or "
        "ensemble; or one or more TRAINER:PLANS:CONFIG, averaged when several",
    )
    parser.add_argument(
        "--folds",
        nargs="+",
        type=int,
        help="folds to average (default: every fold with a final checkpoint)",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--checkpoint",
        default=FINAL_CHECKPOINT,
        help=f"checkpoint file (default {FINAL_CHECKPOINT})",
    )
    parser.add_argument(
        "--no-mirroring",
        action="store_true",
        help="skip test-time mirroring (faster; validation used it where the model allows it)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs samnet wrote there before (other files are kept)",
    )


def selection_and_options(args: argparse.Namespace) -> tuple[Path, Selection, Options]:
    """The trained dataset folder, the models and the options the command line asks for."""
    configure_environment()
    # torch is heavy: imported here, not at the top, to keep --help fast
    from samnet.core.devices import resolve_device

    dataset = find_trained_dataset(args.dataset)
    selection = select_models(dataset, args.model, args.folds, args.checkpoint)
    options = Options(
        device=resolve_device(args.device).type,
        mirroring=not args.no_mirroring,
        checkpoint=args.checkpoint,
    )
    return dataset, selection, options
