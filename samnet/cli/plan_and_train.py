"""``samnet_plan_and_train``: check, plan, preprocess, train every method on every fold, and report.

Re-running continues: planned and preprocessed data are reused, finished folds are
skipped and interrupted ones resume from their last epoch.
"""

from __future__ import annotations

import argparse

from samnet.cli.options import (
    add_device_argument,
    add_override_arguments,
    overrides_from,
    positive_int,
)
from samnet.core.datasets import Dataset
from samnet.core.errors import cli_entry
from samnet.core.methods import CPU_EPOCHS, CPU_ITERATIONS, GPU_EPOCHS, GPU_ITERATIONS
from samnet.core.paths import configure_environment
from samnet.pipeline.options import (
    BASELINES,
    DEFAULT_BASELINES,
    DEFAULT_METHOD_KINDS,
    FOLDS,
    LAUNCHERS,
    METHOD_KINDS,
    BudgetOptions,
    LaunchOptions,
    PlanAndTrainOptions,
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="samnet_plan_and_train",
        description="Check, plan and preprocess a dataset, train every method on every fold with the same "
        "budget and splits, validate, and write samnet_report/ in the dataset's results folder.",
    )
    parser.add_argument(
        "dataset", help="DatasetNNN, its full name (Dataset004_Hippocampus) or its id"
    )
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        default=list(FOLDS),
        choices=FOLDS,
        metavar="F",
    )
    parser.add_argument(
        "--configurations",
        nargs="+",
        default=None,
        help="nnU-Net configurations of every --baselines plans (default: 2d and 3d_fullres "
        "if planned); 2d_lowres is nnU-Net's 2d U-Net at SAM's in-plane spacing, planned when "
        "SAM downsamples the slices",
    )
    parser.add_argument(
        "--baselines",
        nargs="+",
        choices=BASELINES,
        default=list(DEFAULT_BASELINES),
        help="the nnU-Net plans the baselines train on: default (nnU-Net's default planner, "
        "nnUNetPlans) and/or resenc_m (its residual-encoder preset nnUNetPlannerResEncM, "
        "nnUNetResEncUNetMPlans: on CPU about 2.2x default's seconds per 2d step, "
        "Hippocampus at batch 32; it reuses default's 2d and 3d_fullres data). On CPU SAM's budget "
        "follows default's 2d U-Net either way (default: default)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"default {GPU_EPOCHS} on GPU (nnU-Net's), {CPU_EPOCHS} on CPU",
    )
    parser.add_argument(
        "--iterations-per-epoch",
        type=positive_int,
        default=None,
        help=f"optimizer steps per epoch; default {GPU_ITERATIONS} on GPU, {CPU_ITERATIONS} on CPU",
    )
    parser.add_argument(
        "--val-iterations-per-epoch",
        type=positive_int,
        default=None,
        help="validation batches per epoch for the pseudo Dice (default: a fifth of --iterations-per-epoch)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="one batch size for SAM and every 2d baseline (default: on GPU each method "
        "its own plan's, SAM's fitted to the card by the SAM planner; on CPU nnU-Net's "
        "2d plan's for all, at most 32)",
    )
    parser.add_argument(
        "--batch-size-3d",
        type=positive_int,
        default=None,
        help="batch size of the 3d baselines, whose patches hold dozens of slices each "
        "(default: the plan's on GPU, at most 2 on CPU)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHOD_KINDS,
        default=list(DEFAULT_METHOD_KINDS),
        help="what to train: the planned SAM configuration and/or the nnU-Net baselines "
        "(default: both); with --few-shot K, support adds nnU-Net trained on the same K "
        "support slices and on 10K",
    )
    parser.add_argument(
        "--npz",
        action="store_true",
        help="keep validation probabilities (.npz), which the report needs to score ensembles",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local: train here, one fold after another; torchrun: each fold a DDP job "
        "(run here on one node, printed for every node on several); slurm: write a job "
        "array (a task per fold x method) and a comparison job after it",
    )
    parser.add_argument(
        "--nnodes",
        type=positive_int,
        default=1,
        help="machines per fold (torchrun, slurm)",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=positive_int,
        default=None,
        help="processes per machine (default: its GPUs, or 1 on CPU)",
    )
    parser.add_argument(
        "--rdzv-endpoint",
        default=None,
        metavar="HOST:PORT",
        help="where the nodes meet (torchrun with --nnodes > 1)",
    )
    parser.add_argument(
        "--sbatch-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="an extra #SBATCH line, e.g. --sbatch-option=--partition=gpu (repeatable; "
        "one option each, on one line)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="re-plan, re-preprocess and retrain the folds (refused while another run "
        "trains a fold of the dataset); with --launcher torchrun|slurm the folds are "
        "cleared here, and the jobs, requeued or re-run, resume",
    )
    add_override_arguments(parser)
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> PlanAndTrainOptions:
    """The typed options of parsed ``samnet_plan_and_train`` arguments."""
    return PlanAndTrainOptions(
        folds=tuple(args.folds),
        configurations=None
        if args.configurations is None
        else tuple(args.configurations),
        methods=tuple(args.methods),
        baselines=tuple(args.baselines),
        budget=BudgetOptions(
            epochs=args.epochs,
            iterations_per_epoch=args.iterations_per_epoch,
            val_iterations_per_epoch=args.val_iterations_per_epoch,
            batch_size=args.batch_size,
            batch_size_3d=args.batch_size_3d,
        ),
        npz=args.npz,
        device=args.device,
        launch=LaunchOptions(
            launcher=args.launcher,
            nnodes=args.nnodes,
            nproc_per_node=args.nproc_per_node,
            rendezvous=args.rdzv_endpoint,
            sbatch_options=tuple(args.sbatch_option),
        ),
        overwrite=args.overwrite,
    )


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    options = options_from(args)  # checks them before anything is read or written
    configure_environment()
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* at import: configure_environment() first
    from samnet.pipeline.plan_and_train import plan_and_train

    plan_and_train(Dataset.resolve(args.dataset), options, overrides_from(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
