"""How ``samnet_plan_and_train`` runs its folds: here, through ``torchrun``, or as SLURM jobs.

Every fold x method is one ``samnet_train_fold`` run with the comparison's budget. Here,
the runs train one after another in this process. With ``torchrun`` each run is a DDP job
over ``nnodes`` x ``nproc_per_node`` processes; on one node samnet runs them itself, on
several it prints the command every node runs. For SLURM it writes a job array (one task
per fold x method, each a ``torchrun`` over the task's nodes) and a comparison job that
starts when every task has succeeded. Import it after ``configure_environment()``: nnunetv2,
which trains, reads the ``nnUNet_*`` variables at import.

Every fold trains under its lock (``samnet.core.locks``): a fold another run is training
is skipped here and refused by ``samnet_train_fold``. The commands handed on never carry
``--overwrite``: ``--overwrite`` clears their folds here, once, so that a requeued or
re-run task resumes its fold instead of wiping it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
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
from samnet.core.locks import LockBusy, fold_lock, training_lock
from samnet.core.methods import Budget, Method
from samnet.core.paths import NNUNET_FOLDERS
from samnet.pipeline.options import LaunchOptions
from samnet.pipeline.train_fold import fold_folder, train_fold
from samnet.trainers.distributed import (
    is_rank_zero,
    join_process_group,
    patient_barrier,
)

# How long samnet_train_fold waits for a fold another run holds before refusing it: a
# requeued SLURM task can find the lock of the task it replaces still held for a while
# (a lock on a network file system outlives a dead node by the server's lease, 90 s on
# NFSv4).
FOLD_LOCK_GRACE_SECONDS = 180.0
# Multi-node SLURM tasks meet on port 10000 + job id mod 20000: each array task has a job
# id of its own, so tasks sharing a head node do not collide, and the ports stay below
# Linux's ephemeral range (32768 and up). One-node tasks use torchrun --standalone, which
# picks a free port itself.
SLURM_PORT_BASE = 10000
SLURM_PORT_SPAN = 20000


@dataclass(frozen=True)
class FoldRun:
    """One method on one fold with its budget: what ``samnet_train_fold`` takes."""

    method: Method
    fold: int
    budget: Budget

    @property
    def name(self) -> str:
        return f"{self.method.folder_name} fold {self.fold}"

    def arguments(self, dataset_name: str, device: str, npz: bool) -> list[str]:
        """``samnet_train_fold``'s arguments for this run: never ``--overwrite``, so that
        running them again resumes (``clear_folds`` does what ``--overwrite`` asks)."""
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
        return arguments + ["--npz"] * npz


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


def sbatch_output(folder: Path, pattern: str) -> str:
    """``--output=`` of an ``#SBATCH`` line for ``pattern`` (``%A`` ...) in ``folder``,
    quoted as sbatch reads these lines: quotes group words, a backslash escapes the next
    character, an unquoted ``#`` starts a comment; ``%%`` is a literal ``%``."""
    text = str(folder)
    if "\n" in text or "\r" in text:
        raise SamnetError(
            folder,
            "a folder name with a line break cannot go into an #SBATCH line",
            "use an nnUNet_results path without line breaks",
        )
    text = text.replace("%", "%%") + "/" + pattern
    return '--output="' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rendezvous_lines(cluster: Cluster) -> tuple[list[str], str]:
    """The script lines that find where an array task's nodes meet, and torchrun's
    rendezvous options: ``--standalone`` on one node, else the first node at a port
    derived from the task's job id (``SLURM_PORT_BASE``)."""
    if cluster.nnodes == 1:
        return [], "--standalone"
    # sed reads every host name: with ``head -n 1`` the hosts after the first could meet
    # a closed pipe, and pipefail would end the job with SIGPIPE (exit 141).
    lines = [
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        f"port=$(({SLURM_PORT_BASE} + SLURM_JOB_ID % {SLURM_PORT_SPAN}))",
    ]
    return lines, (
        '--rdzv-backend=c10d --rdzv-endpoint="$head:$port" '
        '--rdzv-id="$SLURM_ARRAY_JOB_ID-$SLURM_ARRAY_TASK_ID"'
    )


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
    ``submit.sh``, which submits both with the comparison depending on every task.

    ``sbatch_options`` are checked (``LaunchOptions``): one option a line, no shell.
    """
    header = ["#!/bin/bash", "set -euo pipefail"]
    options = [*sbatch_options]
    if gpus:
        options.append(f"--gpus-per-node={cluster.nproc_per_node}")
    task_arguments = "\n".join(f"  {shlex.quote(shlex.join(a))}" for a in arguments)
    python = shlex.quote(sys.executable)
    meeting_lines, meeting = rendezvous_lines(cluster)
    torchrun = (
        f"srun --ntasks-per-node=1 {python} -m torch.distributed.run "
        f'--nnodes="$SLURM_NNODES" --nproc-per-node={cluster.nproc_per_node} '
        f'{meeting} -m samnet.cli.train_fold "$@"'
    )
    train = [
        header[0],
        f"#SBATCH --job-name=samnet-train-{dataset_name}",
        f"#SBATCH --array=0-{len(runs) - 1}",
        f"#SBATCH --nodes={cluster.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH {sbatch_output(log_folder, 'train_%A_%a.log')}",
        *[f"#SBATCH {option}" for option in options],
        header[1],
        *nnunet_exports(),
        "# one fold x method per array task; a requeued task resumes its fold",
        f"RUNS=(\n{task_arguments}\n)",
        'eval "set -- ${RUNS[$SLURM_ARRAY_TASK_ID]}"',
        *meeting_lines,
        torchrun,
    ]
    compare = [
        header[0],
        f"#SBATCH --job-name=samnet-compare-{dataset_name}",
        "#SBATCH --nodes=1",
        f"#SBATCH {sbatch_output(log_folder, 'compare_%j.log')}",
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
) -> bool:
    """Train the runs one after another in this process, each under its fold's lock; a
    fold another run holds is skipped, naming that run. True when none was skipped."""
    skipped = []
    for index, run in enumerate(runs, start=1):
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(
                    training_lock(dataset.name, run.method.folder_name, run.fold)
                )
            except LockBusy as busy:
                print(f"samnet: [{index}/{len(runs)}] skipped: {busy.problem}")
                skipped.append(run)
                continue
            print(
                f"samnet: [{index}/{len(runs)}] {run.name}: "
                f"{run.budget.epochs} epochs x {run.budget.iterations_per_epoch} steps, "
                f"batch {run.budget.batch_size}, {device}"
            )
            train_run(dataset.name, run, device, npz, overwrite)
    return not report_skipped(dataset.name, skipped)


def train_run(
    dataset_name: str, run: FoldRun, device: torch.device, npz: bool, overwrite: bool
) -> None:
    """``train_fold`` for one run (its fold's lock is the caller's)."""
    train_fold(
        dataset_name,
        run.method,
        run.fold,
        run.budget,
        device,
        overwrite=overwrite,
        save_probabilities=npz,
    )


def report_skipped(dataset_name: str, skipped: Sequence[FoldRun]) -> bool:
    """Say what was left to other runs and when the report can follow; True if any."""
    if skipped:
        print(
            f"samnet: {len(skipped)} fold run(s) skipped: other runs are training them "
            f"(named above). When they have finished: samnet_compare {dataset_name}"
        )
    return bool(skipped)


def train_in_process_group(
    dataset_name: str, run: FoldRun, device_name: str, npz: bool, overwrite: bool
) -> None:
    """One run as ``samnet_train_fold`` trains it: with DDP when ``torchrun`` started this
    process with others, else alone. Rank 0 holds the fold's lock (waiting up to
    ``FOLD_LOCK_GRACE_SECONDS`` for another run's), the others wait for it."""
    device = resolve_device(device_name)
    distributed = join_process_group(device)
    try:
        with contextlib.ExitStack() as held:
            if is_rank_zero():
                held.enter_context(
                    training_lock(
                        dataset_name,
                        run.method.folder_name,
                        run.fold,
                        wait=FOLD_LOCK_GRACE_SECONDS,
                    )
                )
            patient_barrier()
            train_run(dataset_name, run, device, npz, overwrite)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def fold_in_use(dataset_name: str, run: FoldRun) -> LockBusy | None:
    """Why ``run`` cannot start now (another run holds its fold), or None."""
    try:
        with fold_lock(dataset_name, run.method.folder_name, run.fold):
            return None
    except LockBusy as busy:
        return busy


def clear_folds(dataset_name: str, runs: Sequence[FoldRun]) -> None:
    """Delete the folds of ``runs`` (``--overwrite`` for runs handed on), each under its
    lock: a fold another run is training is refused, naming it."""
    for run in runs:
        with fold_lock(dataset_name, run.method.folder_name, run.fold):
            folder = fold_folder(dataset_name, run.method, run.fold)
            if folder.exists():
                shutil.rmtree(folder)


def run_with_torchrun(
    dataset: Dataset,
    runs: Sequence[FoldRun],
    arguments: Sequence[Sequence[str]],
    cluster: Cluster,
) -> bool:
    """Each run as a ``torchrun`` job: here, one after another, on one node (True when all
    ended); on several, the commands each node runs are printed instead (False). A fold
    another run holds is skipped here (its job would refuse it)."""
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
    skipped = []
    for index, (run, command) in enumerate(zip(runs, commands), start=1):
        busy = fold_in_use(dataset.name, run)
        if busy is not None:
            print(f"samnet: [{index}/{len(runs)}] skipped: {busy.problem}")
            skipped.append(run)
            continue
        print(f"samnet: [{index}/{len(runs)}] {shlex.join(command)}")
        if subprocess.run(command, check=False).returncode != 0:
            raise SamnetError(
                None,
                f"torchrun failed on {run.name} (its output is above)",
                "fix the cause and re-run the same command: finished folds are kept, this one resumes",
            )
    return not report_skipped(dataset.name, skipped)


def launch(
    dataset: Dataset,
    runs: Sequence[FoldRun],
    device: torch.device,
    options: LaunchOptions,
    npz: bool,
    overwrite: bool,
) -> bool:
    """Run ``runs`` as ``options.launcher`` says; True when they all ended here, False when
    they were handed on (SLURM jobs written, torchrun commands printed for the nodes) or
    some were left to other runs training them."""
    if options.launcher == "local":
        return train_here(dataset, runs, device, npz, overwrite)
    if overwrite:
        clear_folds(dataset.name, runs)
    gpus = device.type == "cuda"
    cluster = cluster_for(options, gpus)
    arguments = [run.arguments(dataset.name, device.type, npz) for run in runs]
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
