"""Launching folds safely: DDP ranks outwait a long rank-0 step, SLURM tasks resume
when requeued, meet on ports of their own, and take no shell text from options."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from samnet.cli.plan_and_train import main as plan_and_train_main
from samnet.cli.train_fold import parse_arguments
from samnet.core.datasets import Dataset
from samnet.core.errors import SamnetError
from samnet.core.methods import Budget, Method
from samnet.pipeline.launchers import Cluster, FoldRun, launch, slurm_scripts
from samnet.pipeline.options import LaunchOptions

# Each rank: a gloo group whose own timeout is 2 s, then rank 0 alone works for 6 s
# (an embedding cache build) while the others wait for it.
RANK = textwrap.dedent(
    """
    import sys, time
    from datetime import timedelta
    import torch, torch.distributed as dist
    from samnet.trainers.distributed import join_process_group, rank_zero_first
    rank = int(sys.argv[1])
    dist.init_process_group(
        "gloo", init_method=sys.argv[2], rank=rank, world_size=2,
        timeout=timedelta(seconds=2),
    )
    join_process_group(torch.device("cpu"))
    with rank_zero_first(True):
        if rank == 0:
            time.sleep(6)
    print("passed", flush=True)
    """
)


def test_ranks_wait_for_rank_zero_longer_than_the_group_timeout(
    tmp_path: Path,
) -> None:
    environment = dict(os.environ, WORLD_SIZE="2")
    store = f"file://{tmp_path / 'store'}"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(rank), store],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [rank.communicate(timeout=120)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs
    assert all("passed" in output for output in outputs)


DATASET = Dataset(4, "Dataset004_Hippocampus")
BUDGET = Budget(10, 5, 1, 8)
SAM = Method("nnUNetTrainerSAM", "samnetPlans", "sam_2d")
RUNS_ARGUMENTS = FoldRun(SAM, 0, BUDGET).arguments(DATASET.name, "cuda", npz=False)


def sbatch_words(line: str) -> list[str]:
    """The arguments sbatch reads from an ``#SBATCH`` line, by its rules (Slurm's
    ``src/sbatch/opt.c``, ``_get_argument``): quotes group, a backslash escapes the next
    character, an unquoted ``#`` ends the line."""
    words, word, quote, escaped, started = [], "", None, False, False
    for char in line.removeprefix("#SBATCH"):
        if escaped:
            word, escaped, started = word + char, False, True
        elif char == "\\":
            escaped = True
        elif quote is not None:
            quote, word = (None, word) if char == quote else (quote, word + char)
        elif char in "\"'":
            quote, started = char, True
        elif char == "#":
            break
        elif char.isspace():
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + char, True
    return [*words, word] if started else words


def run_task(folder: Path, job_id: int, nodes: int) -> list[str]:
    """Run array task 0 of ``folder/train.sbatch`` with stand-ins for ``srun`` and
    ``scontrol``; returns what ``srun`` was asked to start."""
    bin_folder = folder / "bin"
    bin_folder.mkdir(exist_ok=True)
    (bin_folder / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$CALLS"\n')
    (bin_folder / "scontrol").write_text("#!/bin/bash\necho node-a\necho node-b\n")
    for name in ("srun", "scontrol"):
        (bin_folder / name).chmod(0o755)
    environment = dict(
        os.environ,
        PATH=f"{bin_folder}{os.pathsep}{os.environ['PATH']}",
        CALLS=str(folder / "srun_call"),
        SLURM_ARRAY_TASK_ID="0",
        SLURM_ARRAY_JOB_ID="7",
        SLURM_JOB_ID=str(job_id),
        SLURM_JOB_NODELIST="node-[a-b]",
        SLURM_NNODES=str(nodes),
    )
    subprocess.run(["bash", str(folder / "train.sbatch")], env=environment, check=True)
    return (folder / "srun_call").read_text().splitlines()


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    return tmp_path / "nnUNet_results" / DATASET.name


def test_a_requeued_task_resumes_its_fold(results: Path) -> None:
    runs = [FoldRun(SAM, fold, BUDGET) for fold in (0, 1)]
    kept = results / SAM.folder_name / "fold_3"
    for folder in (results / SAM.folder_name / "fold_0", kept):
        folder.mkdir(parents=True)
        (folder / "checkpoint_latest.pth").write_bytes(b"epoch 5")
    options = LaunchOptions(launcher="slurm")
    assert not launch(DATASET, runs, torch.device("cpu"), options, False, True)
    # --overwrite cleared the chosen folds once, here; other folds are untouched.
    assert not (results / SAM.folder_name / "fold_0").exists()
    assert (kept / "checkpoint_latest.pth").exists()
    folder = results / "samnet_slurm"
    assert "--overwrite" not in (folder / "train.sbatch").read_text()
    # The task trains a while, is requeued and starts again: it resumes, wiping nothing.
    for _ in range(2):
        command = run_task(folder, job_id=4242, nodes=1)
        parsed = parse_arguments(command[command.index("samnet.cli.train_fold") + 1 :])
        assert (parsed.fold, parsed.overwrite) == (0, False)


def test_one_node_tasks_do_not_share_a_fixed_port(tmp_path: Path) -> None:
    scripts = slurm_scripts(
        DATASET.name,
        [FoldRun(SAM, 0, BUDGET)],
        [RUNS_ARGUMENTS],
        Cluster(1, 2),
        True,
        tmp_path,
    )
    (tmp_path / "train.sbatch").write_text(scripts["train.sbatch"])
    command = run_task(tmp_path, job_id=4242, nodes=1)
    # torchrun picks a free port on the node itself
    assert "--standalone" in command
    assert not any(word.startswith("--rdzv-endpoint") for word in command)


def test_log_paths_reach_sbatch_whole(tmp_path: Path) -> None:
    logs = tmp_path / 'my logs "#1" 50%'
    scripts = slurm_scripts(
        DATASET.name,
        [FoldRun(SAM, 0, BUDGET)],
        [RUNS_ARGUMENTS],
        Cluster(),
        False,
        logs,
    )
    for name, pattern in (
        ("train.sbatch", "train_%A_%a"),
        ("compare.sbatch", "compare_%j"),
    ):
        line = next(line for line in scripts[name].splitlines() if "--output" in line)
        escaped = str(logs).replace("%", "%%")  # sbatch's pattern for a literal %
        assert sbatch_words(line) == [f"--output={escaped}/{pattern}.log"]
        (tmp_path / name).write_text(scripts[name])
        subprocess.run(["bash", "-n", str(tmp_path / name)], check=True)
    with pytest.raises(SamnetError, match="line break"):
        slurm_scripts(
            DATASET.name,
            [FoldRun(SAM, 0, BUDGET)],
            [RUNS_ARGUMENTS],
            Cluster(),
            False,
            tmp_path / "a\nb",
        )


@pytest.mark.parametrize(
    "option", ["--time=1:00:00\ntouch /tmp/pwned", "--comment=a\rb", "partition=gpu"]
)
def test_an_sbatch_option_that_is_not_one_option_is_refused(
    option: str, results: Path, capsys: pytest.CaptureFixture
) -> None:
    arguments = ["4", "--launcher", "slurm", f"--sbatch-option={option}"]
    assert plan_and_train_main(arguments) == 1
    error = capsys.readouterr().err
    assert "--sbatch-option" in error and "one option" in error
    assert not results.parent.exists()  # nothing read or written
    with pytest.raises(SamnetError):
        LaunchOptions(launcher="slurm", sbatch_options=(option,))
