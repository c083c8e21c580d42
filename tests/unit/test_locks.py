"""Two runs on one dataset: planning waits for the run that plans, a fold another run
trains is skipped or refused naming that run, and a killed run leaves no lock behind.
Each holder here is a real second process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from samnet.core.datasets import Dataset
from samnet.core.locks import (
    LockBusy,
    fold_lock,
    fold_lock_path,
    holder_path,
    lock_path,
    planning_lock,
    read_holder,
)
from samnet.core.methods import Budget, Method
from samnet.pipeline.launchers import FoldRun, train_here
from samnet.pipeline.plan_and_train import replanning_guard

DATASET = Dataset(4, "Dataset004_Hippocampus")
METHOD = Method("nnUNetTrainer", "nnUNetPlans", "2d")
# Holds a lock until a line arrives on stdin, then marks that it let go, and releases it.
HOLDER = """
import sys
from samnet.core.locks import fold_lock, planning_lock
dataset, kind, released = sys.argv[1:4]
lock = planning_lock(dataset) if kind == "planning" else fold_lock(dataset, kind, 0)
with lock:
    print("held", flush=True)
    sys.stdin.readline()
    open(released, "w").close()
"""


@pytest.fixture(autouse=True)
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen]]:
    """Start another process that holds a lock (``planning`` or a method folder's fold 0)."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    started = []

    def start(kind: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(script), DATASET.name, kind, str(tmp_path / "let_go")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        started.append(process)
        assert process.stdout.readline() == "held\n"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_fold_another_run_trains_is_refused_naming_that_run(holder) -> None:
    process = holder(METHOD.folder_name)
    with (
        pytest.raises(LockBusy) as busy,
        fold_lock(DATASET.name, METHOD.folder_name, 0),
    ):
        pass
    message = str(busy.value)
    assert (
        f"{METHOD.folder_name} fold 0 is held by 'holder.py {DATASET.name}" in message
    )
    assert f"pid {process.pid} on {socket.gethostname()}" in message
    assert "fix: let that run train it" in message
    # Another fold of the same method is free.
    with fold_lock(DATASET.name, METHOD.folder_name, 1):
        pass


def test_a_fold_is_refused_after_its_grace_period(
    holder, capsys: pytest.CaptureFixture
) -> None:
    holder(METHOD.folder_name)
    with (
        pytest.raises(LockBusy),
        fold_lock(DATASET.name, METHOD.folder_name, 0, wait=0.5),
    ):
        pass
    assert "waiting (at most 0.5 s)" in capsys.readouterr().out


def test_planning_waits_for_the_run_that_plans(
    holder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    process = holder("planning")
    # The other run finishes planning a moment after this one starts waiting.
    threading.Timer(1.0, process.communicate, kwargs={"input": "\n"}).start()
    with planning_lock(DATASET.name):
        assert (tmp_path / "let_go").exists()
        assert read_holder(lock_path(DATASET.name, "planning")).pid == os.getpid()
    output = capsys.readouterr().out
    assert f"planning {DATASET.name} is held by 'holder.py" in output
    assert f"pid {process.pid}" in output and "waiting:" in output


def test_a_killed_run_leaves_no_lock(holder) -> None:
    process = holder(METHOD.folder_name)
    process.kill()
    process.wait()
    lock = fold_lock_path(DATASET.name, METHOD.folder_name, 0)
    with fold_lock(DATASET.name, METHOD.folder_name, 0):
        assert read_holder(lock).pid == os.getpid()
    assert not holder_path(lock).exists()


def test_training_here_skips_a_fold_another_run_trains(
    holder, capsys: pytest.CaptureFixture
) -> None:
    process = holder(METHOD.folder_name)
    run = FoldRun(METHOD, 0, Budget(1, 1, 1, 2))
    # Nothing is planned: training this fold would fail; it is skipped before that.
    assert not train_here(DATASET, [run], torch.device("cpu"), False, False)
    output = capsys.readouterr().out
    assert f"[1/1] skipped: {METHOD.folder_name} fold 0 is held by" in output
    assert f"pid {process.pid}" in output
    assert f"samnet_compare {DATASET.name}" in output


def test_replanning_with_overwrite_is_refused_while_a_fold_trains(holder) -> None:
    with replanning_guard(DATASET, overwrite=True):
        pass  # no fold was ever trained: nothing to wait for
    process = holder(METHOD.folder_name)
    with replanning_guard(DATASET, overwrite=False):
        pass  # without --overwrite nothing a fold reads is rewritten
    with pytest.raises(LockBusy) as busy, replanning_guard(DATASET, overwrite=True):
        pass
    assert f"pid {process.pid}" in str(busy.value)
    assert "before re-planning with --overwrite" in str(busy.value)
