"""``samnet_train_fold``: train and validate one method on one fold, alone or under torchrun.

What ``samnet_plan_and_train --launcher torchrun|slurm`` runs for each fold x method, on
data it has planned and preprocessed. Started by ``torchrun`` with several processes, it
joins their group and trains with DDP (``samnet.trainers.distributed``); started alone,
it trains as ``samnet_plan_and_train`` does. Resumes an interrupted fold like it too, so
a requeued SLURM task continues its fold. The fold trains under its lock: a fold another
run is training is refused, naming that run (after a grace period for a requeued task's
predecessor), and training waits while another run plans the dataset.

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HEAD:29500 \\
        -m samnet.cli.train_fold Dataset004_Hippocampus --trainer nnUNetTrainerSAM \\
        --plans samnetPlans --configuration sam_2d --fold 0 --epochs 1000 \\
        --iterations-per-epoch 250 --val-iterations-per-epoch 50 --batch-size 32
"""

from __future__ import annotations

import argparse

from samnet.cli.options import add_device_argument, positive_int
from samnet.core.errors import cli_entry
from samnet.core.methods import Budget, Method
from samnet.core.paths import configure_environment


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="samnet_train_fold",
        description="Train and validate one method on one fold of a planned dataset; "
        "with DDP when torchrun starts it with several processes.",
    )
    parser.add_argument(
        "dataset", help="the dataset's full name, e.g. Dataset004_Hippocampus"
    )
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--plans", required=True)
    parser.add_argument("--configuration", required=True)
    parser.add_argument("--fold", type=int, required=True, choices=range(5))
    parser.add_argument("--epochs", type=positive_int, required=True)
    parser.add_argument("--iterations-per-epoch", type=positive_int, required=True)
    parser.add_argument("--val-iterations-per-epoch", type=positive_int, required=True)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        required=True,
        help="the global batch: split over the processes under torchrun",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--npz", action="store_true", help="keep validation probabilities"
    )
    parser.add_argument("--overwrite", action="store_true", help="retrain the fold")
    return parser.parse_args(argv)


def budget_of(args: argparse.Namespace) -> Budget:
    return Budget(
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        val_iterations_per_epoch=args.val_iterations_per_epoch,
        batch_size=args.batch_size,
    )


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    configure_environment()
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* at import: configure_environment() first
    from samnet.pipeline.launchers import FoldRun, train_in_process_group

    run = FoldRun(
        Method(args.trainer, args.plans, args.configuration),
        args.fold,
        budget_of(args),
    )
    train_in_process_group(args.dataset, run, args.device, args.npz, args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
