"""torchrun commands and SLURM scripts for the fold runs, run against stand-ins of
``srun`` and ``scontrol`` that print what they would start."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from samnet.cli.train_fold import parse_arguments
from samnet.core.errors import SamnetError
from samnet.core.methods import Budget, Method
from samnet.pipeline.launchers import Cluster, FoldRun, slurm_scripts, torchrun_command

DATASET = "Dataset004_Hippocampus"
BUDGET = Budget(10, 5, 1, 8)
RUNS = [
    FoldRun(Method(trainer, plans, configuration), fold, BUDGET)
    for trainer, plans, configuration in (
        ("nnUNetTrainerSAM", "samnetPlans", "sam_2d"),
        ("nnUNetTrainer", "nnUNetPlans", "2d"),
    )
    for fold in range(5)
]
ARGUMENTS = [run.arguments(DATASET, "cuda", npz=True) for run in RUNS]


def test_fold_arguments_are_what_samnet_train_fold_parses() -> None:
    parsed = parse_arguments(ARGUMENTS[3])
    assert (parsed.trainer, parsed.plans, parsed.configuration) == (
        "nnUNetTrainerSAM",
        "samnetPlans",
        "sam_2d",
    )
    assert (parsed.fold, parsed.epochs, parsed.iterations_per_epoch) == (3, 10, 5)
    assert (parsed.batch_size, parsed.npz, parsed.overwrite) == (8, True, False)


def test_torchrun_is_standalone_on_one_node_and_meets_at_the_endpoint_on_several() -> (
    None
):
    one = torchrun_command(Cluster(1, 4), "run", ARGUMENTS[0])
    assert "--standalone" in one and "--nproc-per-node=4" in one
    assert one[one.index("-m", 3) + 1] == "samnet.cli.train_fold"
    two = torchrun_command(Cluster(2, 8, "head:29500"), "run-7", ARGUMENTS[0])
    assert {"--nnodes=2", "--rdzv-endpoint=head:29500", "--rdzv-id=run-7"} <= set(two)
    with pytest.raises(SamnetError, match="--rdzv-endpoint"):
        torchrun_command(Cluster(2, 8), "run", ARGUMENTS[0])


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    written = slurm_scripts(
        DATASET,
        RUNS,
        ARGUMENTS,
        Cluster(2, 4),
        gpus=True,
        log_folder=tmp_path / "logs",
        sbatch_options=["--time=24:00:00"],
    )
    for name, text in written.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def fake_commands(folder: Path) -> dict[str, str]:
    """``srun``, ``scontrol`` and ``sbatch`` that echo their arguments into ``calls``."""
    bin_folder = folder / "bin"
    bin_folder.mkdir()
    scripts = {
        "srun": 'printf "%s\\n" "$@" > "$CALLS/srun"',
        # The pause lets a reader that stops after one line close the pipe first.
        "scontrol": "echo node-a; sleep 0.2; echo node-b",
        "sbatch": 'echo "$@" >> "$CALLS/sbatch"; echo 4242',
    }
    for name, body in scripts.items():
        (bin_folder / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_folder / name).chmod(0o755)
    (folder / "calls").mkdir()
    return dict(
        os.environ,
        PATH=f"{bin_folder}{os.pathsep}{os.environ['PATH']}",
        CALLS=str(folder / "calls"),
    )


def test_slurm_array_has_a_task_per_fold_and_method(scripts: Path) -> None:
    train = (scripts / "train.sbatch").read_text()
    assert "#SBATCH --array=0-9" in train
    assert "#SBATCH --nodes=2" in train and "#SBATCH --gpus-per-node=4" in train
    assert "#SBATCH --time=24:00:00" in train
    for name in ("train.sbatch", "compare.sbatch", "submit.sh"):
        check = subprocess.run(["bash", "-n", str(scripts / name)], check=False)
        assert check.returncode == 0, name


@pytest.mark.parametrize("task", [0, 7])
def test_each_array_task_runs_torchrun_with_its_fold(scripts: Path, task: int) -> None:
    environment = fake_commands(scripts)
    environment.update(SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_JOB_ID="99")
    environment.update(SLURM_JOB_ID=str(100 + task))
    environment.update(SLURM_JOB_NODELIST="node-[a-b]", SLURM_NNODES="2")
    subprocess.run(["bash", str(scripts / "train.sbatch")], env=environment, check=True)
    command = (scripts / "calls" / "srun").read_text().splitlines()
    assert command[1:4] == [sys.executable, "-m", "torch.distributed.run"]
    port = 10000 + 100 + task  # derived from the task's own job id
    assert "--nnodes=2" in command and f"--rdzv-endpoint=node-a:{port}" in command
    assert "--rdzv-id=99-" + str(task) in command
    assert command[command.index("samnet.cli.train_fold") + 1 :] == ARGUMENTS[task]


def test_submit_makes_the_comparison_wait_for_every_task(scripts: Path) -> None:
    environment = fake_commands(scripts)
    subprocess.run(["bash", str(scripts / "submit.sh")], env=environment, check=True)
    calls = (scripts / "calls" / "sbatch").read_text().splitlines()
    assert calls == [
        "--parsable train.sbatch",
        "--dependency=afterok:4242 compare.sbatch",
    ]
    compare = (scripts / "compare.sbatch").read_text()
    assert f"-m samnet.cli.compare {shlex.quote(DATASET)}" in compare
