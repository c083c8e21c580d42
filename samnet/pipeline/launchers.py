"""How ``samnet_plan_and_train`` runs its folds: here, through ``torchrun``, or as SLURM jobs.

Every fold x method is one ``samnet_train_fold`` run with the comparison's budget. Here,
the runs train one after another in this process. With ``torchrun`` each run is a DDP job
over ``nnodes`` x ``nproc_per_node`` processes; on one node samnet runs them itself, on
several it prints the command every node runs. For SLURM it writes a job array (one task
per fold x method, each a ``torchrun`` over the task's nodes) and a comparison job that
starts when every task has succeeded. Import it after ``configure_environment()``: nnunetv2,
which trains, reads the ``nnUNet_*`` variables at import.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from samnet.core.atomic import atomic_folder
from samnet.core.datasets import Dataset
from samnet.core.devices import resolve_device
from samnet.core.errors import SamnetError
from samnet.core.layout import SLURM_FOLDER
from samnet.core.methods import Budget, Method
from samnet.core.paths import NNUNET_FOLDERS
from samnet.pipeline.options import LaunchOptions
from samnet.pipeline.train_fold import train_fold
from samnet.trainers.distributed import join_process_group

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


def cluster_for(options: LaunchOptions, gpus: bool) -> Cluster:
    """The cluster ``options`` ask for, one process per GPU (or one on CPU) unless they say."""
    default = torch.cuda.device_count() if gpus else 1
    return Cluster(
        options.nnodes, options.nproc_per_node or default, options.rendezvous
    )


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
        f"{python} -m samnet.cli.compare {shlex.quote(dataset_name)}",
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
    scripts = slurm_scripts(
        dataset_name, runs, arguments, cluster, gpus, folder / "logs", sbatch_options
    )
    with atomic_folder(folder, overwrite) as staging:
        (staging / "logs").mkdir()
        for name, text in scripts.items():
            (staging / name).write_text(text)
            (staging / name).chmod(0o755)
    return folder


def train_here(
    dataset: Dataset,
    runs: Sequence[FoldRun],
    device: torch.device,
    npz: bool,
    overwrite: bool,
) -> None:
    """Train the runs one after another in this process."""
    for index, run in enumerate(runs, start=1):
        print(
            f"samnet: [{index}/{len(runs)}] {run.method.folder_name} fold {run.fold}: "
            f"{run.budget.epochs} epochs x {run.budget.iterations_per_epoch} steps, "
            f"batch {run.budget.batch_size}, {device}"
        )
        train_fold(
            dataset.name,
            run.method,
            run.fold,
            run.budget,
            device,
            overwrite=overwrite,
            save_probabilities=npz,
        )


def train_in_process_group(
    dataset_name: str, run: FoldRun, device_name: str, npz: bool, overwrite: bool
) -> None:
    """One run as ``samnet_train_fold`` trains it: with DDP when ``torchrun`` started this
    process with others, else alone."""
    device = resolve_device(device_name)
    distributed = join_process_group(device)
    try:
        train_fold(
            dataset_name,
            run.method,
            run.fold,
            run.budget,
            device,
            overwrite=overwrite,
            save_probabilities=npz,
        )
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def run_with_torchrun(
    dataset: Dataset,
    runs: Sequence[FoldRun],
    arguments: Sequence[Sequence[str]],
    cluster: Cluster,
) -> bool:
    """Each run as a ``torchrun`` job: here, one after another, on one node (True when all
    ended); on several, the commands each node runs are printed instead (False)."""
    commands = [
        torchrun_command(cluster, run_id(dataset.name, run), a)
        for run, a in zip(runs, arguments)
    ]
    if cluster.nnodes > 1:
        print(
            f"samnet: run each command on all {cluster.nnodes} nodes, one after another:"
        )
        for command in commands:
            print(shlex.join(command))
        print(f"then, on one node: samnet_compare {dataset.name}")
        return False
    for index, (run, command) in enumerate(zip(runs, commands), start=1):
        print(f"samnet: [{index}/{len(runs)}] {shlex.join(command)}")
        if subprocess.run(command, check=False).returncode != 0:
            raise SamnetError(
                None,
                f"torchrun failed on {run.method.folder_name} fold {run.fold} (its output is above)",
                "fix the cause and re-run the same command: finished folds are kept, this one resumes",
            )
    return True


def launch(
    dataset: Dataset,
    runs: Sequence[FoldRun],
    device: torch.device,
    options: LaunchOptions,
    npz: bool,
    overwrite: bool,
) -> bool:
    """Run ``runs`` as ``options.launcher`` says; True when they all ended here, False when
    they were handed on (SLURM jobs written, torchrun commands printed for the nodes)."""
    if options.launcher == "local":
        train_here(dataset, runs, device, npz, overwrite)
        return True
    gpus = device.type == "cuda"
    cluster = cluster_for(options, gpus)
    arguments = [
        run.arguments(dataset.name, device.type, npz, overwrite) for run in runs
    ]
    if options.launcher == "torchrun":
        return run_with_torchrun(dataset, runs, arguments, cluster)
    folder = write_slurm_jobs(
        dataset.name,
        runs,
        arguments,
        cluster,
        gpus,
        dataset.results / SLURM_FOLDER,
        overwrite,
        options.sbatch_options,
    )
    print(
        f"samnet: {len(runs)} training task(s) in {folder}/train.sbatch, the comparison "
        f"in compare.sbatch after them; submit both with: bash {folder}/submit.sh"
    )
    return False
