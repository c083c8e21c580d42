"""How ``samnet_plan_and_train`` runs its folds: here, through ``torchrun``, or as SLURM jobs.

Every fold x method is one ``samnet_train_fold`` run with the comparison's budget. With
``torchrun`` each run is a DDP job over ``nnodes`` x ``nproc_per_node`` processes; on one
node samnet runs them itself, on several it prints the command every node runs. For SLURM
it writes a job array (one task per fold x method, each a ``torchrun`` over the task's
nodes) and a comparison job that starts when every task has succeeded.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from samnet.core.errors import SamnetError
from samnet.core.methods import Budget, Method
from samnet.core.paths import NNUNET_FOLDERS

LAUNCHERS = ("local", "torchrun", "slurm")
RENDEZVOUS_PORT = 29500


@dataclass(frozen=True)
class FoldRun:
    """One method on one fold with its budget: what ``samnet_train_fold`` takes."""

    method: Method
    fold: int
    budget: Budget

    def arguments(
        self, dataset_name: str, device: str, npz: bool, overwrite: bool
    ) -> list[str]:
        """``samnet_train_fold``'s arguments for this run."""
        arguments = [dataset_name, "--trainer", self.method.trainer]
        arguments += ["--plans", self.method.plans]
        arguments += ["--configuration", self.method.configuration]
        arguments += ["--fold", str(self.fold), "--epochs", str(self.budget.epochs)]
        arguments += ["--iterations-per-epoch", str(self.budget.iterations_per_epoch)]
        arguments += [
            "--val-iterations-per-epoch",
            str(self.budget.val_iterations_per_epoch),
        ]
        arguments += ["--batch-size", str(self.budget.batch_size), "--device", device]
        return arguments + ["--npz"] * npz + ["--overwrite"] * overwrite


@dataclass(frozen=True)
class Cluster:
    """Where the DDP processes of one fold run.

    Attributes:
      nnodes: machines per fold.
      nproc_per_node: processes per machine (one per GPU; on CPUs, one per machine).
      rendezvous: ``HOST:PORT`` of the first node, needed when ``nnodes`` > 1.
    """

    nnodes: int = 1
    nproc_per_node: int = 1
    rendezvous: str | None = None


def torchrun_command(
    cluster: Cluster, run_id: str, arguments: Sequence[str]
) -> list[str]:
    """``torchrun`` (as ``python -m torch.distributed.run``, this environment's) for one fold."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    command += [
        f"--nnodes={cluster.nnodes}",
        f"--nproc-per-node={cluster.nproc_per_node}",
    ]
    if cluster.nnodes == 1:
        command.append("--standalone")
    else:
        if cluster.rendezvous is None:
            raise SamnetError(
                None,
                f"--nnodes {cluster.nnodes} needs the address where the nodes meet",
                "pass --rdzv-endpoint HOST:PORT (HOST: the first node, reachable from all)",
            )
        command += ["--rdzv-backend=c10d", f"--rdzv-endpoint={cluster.rendezvous}"]
        command.append(f"--rdzv-id={run_id}")
    return [*command, "-m", "samnet.cli.train_fold", *arguments]


def run_id(dataset_name: str, run: FoldRun) -> str:
    return f"samnet-{dataset_name}-{run.method.trainer}-{run.method.configuration}-{run.fold}"


def nnunet_exports() -> list[str]:
    """The nnU-Net folders of this process, as shell ``export`` lines."""
    return [
        f"export {variable}={shlex.quote(os.environ[variable])}"
        for variable in NNUNET_FOLDERS
        if variable in os.environ
    ]


def slurm_scripts(
    dataset_name: str,
    runs: Sequence[FoldRun],
    arguments: Sequence[Sequence[str]],
    cluster: Cluster,
    gpus: bool,
    log_folder: Path,
    sbatch_options: Sequence[str] = (),
) -> dict[str, str]:
    """``train.sbatch`` (array: task i runs ``runs[i]``), ``compare.sbatch`` and
    ``submit.sh``, which submits both with the comparison depending on every task."""
    header = ["#!/bin/bash", "set -euo pipefail"]
    options = [*sbatch_options]
    if gpus:
        options.append(f"--gpus-per-node={cluster.nproc_per_node}")
    task_arguments = "\n".join(f"  {shlex.quote(shlex.join(a))}" for a in arguments)
    # sed reads every host name: with ``head -n 1`` the hosts after the first could meet
    # a closed pipe, and pipefail would end the job with SIGPIPE (exit 141).
    head = 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)'
    python = shlex.quote(sys.executable)
    torchrun = (
        f"srun --ntasks-per-node=1 {python} -m torch.distributed.run "
        f'--nnodes="$SLURM_NNODES" --nproc-per-node={cluster.nproc_per_node} '
        f'--rdzv-backend=c10d --rdzv-endpoint="$head:{RENDEZVOUS_PORT}" '
        '--rdzv-id="$SLURM_ARRAY_JOB_ID-$SLURM_ARRAY_TASK_ID" '
        '-m samnet.cli.train_fold "$@"'
    )
    train = [
        header[0],
        f"#SBATCH --job-name=samnet-train-{dataset_name}",
        f"#SBATCH --array=0-{len(runs) - 1}",
        f"#SBATCH --nodes={cluster.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --output={log_folder}/train_%A_%a.log",
        *[f"#SBATCH {option}" for option in options],
        header[1],
        *nnunet_exports(),
        "# one fold x method per array task",
        f"RUNS=(\n{task_arguments}\n)",
        'eval "set -- ${RUNS[$SLURM_ARRAY_TASK_ID]}"',
        head,
        torchrun,
    ]
    compare = [
        header[0],
        f"#SBATCH --job-name=samnet-compare-{dataset_name}",
        "#SBATCH --nodes=1",
        f"#SBATCH --output={log_folder}/compare_%j.log",
        *[f"#SBATCH {option}" for option in sbatch_options],
        header[1],
        *nnunet_exports(),
        f"{python} -m samnet.evaluation.report {shlex.quote(dataset_name)}",
    ]
    submit = [
        *header,
        'cd "$(dirname "$0")"',
        "train=$(sbatch --parsable train.sbatch)",
        "sbatch --dependency=afterok:${train%%;*} compare.sbatch",
        'echo "submitted training array $train and the comparison after it"',
    ]
    return {
        "train.sbatch": "\n".join(train) + "\n",
        "compare.sbatch": "\n".join(compare) + "\n",
        "submit.sh": "\n".join(submit) + "\n",
    }


def write_slurm_jobs(
    dataset_name: str,
    runs: Sequence[FoldRun],
    arguments: Sequence[Sequence[str]],
    cluster: Cluster,
    gpus: bool,
    folder: Path,
    overwrite: bool,
    sbatch_options: Sequence[str] = (),
) -> Path:
    """Write ``slurm_scripts`` into ``folder`` (all or nothing; kept unless ``overwrite``)."""
    from samnet.core.atomic import atomic_folder

    scripts = slurm_scripts(
        dataset_name, runs, arguments, cluster, gpus, folder / "logs", sbatch_options
    )
    with atomic_folder(folder, overwrite) as staging:
        (staging / "logs").mkdir()
        for name, text in scripts.items():
            (staging / name).write_text(text)
            (staging / name).chmod(0o755)
    return folder
