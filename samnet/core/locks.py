"""Locks that keep two samnet runs on one dataset apart, and name who holds them.

Planning and preprocessing a dataset take its planning lock (a second run waits);
training a fold takes that fold's lock (a second run skips the fold or refuses it). Each
is an OS file lock (``filelock``): it frees itself when its process ends, SIGKILL
included, so a killed run never leaves a lock behind. Beside each lock file its holder
(host, pid, command, start time) is recorded, for the message the other run prints.
The lock files live in ``nnUNet_preprocessed/DATASET/.samnet_locks/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

from samnet.core.atomic import atomic_file
from samnet.core.errors import SamnetError
from samnet.core.layout import LOCK_FOLDER
from samnet.core.paths import preprocessed_folder

HOLDER_SUFFIX = ".holder.json"
FOLD_LOCK_PATTERN = "*.fold_*.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough for a colleague to find the run (``scancel``, ``kill``)."""

    host: str
    pid: int
    command: str
    started: str
    slurm_job: str | None = None

    @classmethod
    def this_process(cls) -> Holder:
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            command=shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            started=datetime.now().astimezone().isoformat(timespec="seconds"),
            slurm_job=os.environ.get("SLURM_JOB_ID"),
        )

    def __str__(self) -> str:
        job = f", SLURM job {self.slurm_job}" if self.slurm_job else ""
        return (
            f"'{self.command}' (pid {self.pid} on {self.host}{job}, "
            f"since {self.started})"
        )


class LockBusy(SamnetError):
    """Another run holds the lock; ``holder`` is who, when it recorded itself."""

    def __init__(self, path: Path, what: str, holder: Holder | None, fix: str) -> None:
        self.holder = holder
        super().__init__(path, f"{what} is held by {describe(holder)}", fix)


def describe(holder: Holder | None) -> str:
    # A holder records itself right after it takes the lock: in between it is unnamed.
    return "another run (not recorded yet)" if holder is None else str(holder)


def lock_path(dataset_name: str, name: str) -> Path:
    return preprocessed_folder() / dataset_name / LOCK_FOLDER / f"{name}.lock"


def holder_path(lock: Path) -> Path:
    return lock.with_name(lock.name + HOLDER_SUFFIX)


def read_holder(lock: Path) -> Holder | None:
    """The holder recorded beside ``lock``; None when none is (or it cannot be read)."""
    try:
        return Holder(**json.loads(holder_path(lock).read_text()))
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def hold(path: Path, what: str, wait: float | None, fix: str) -> Iterator[None]:
    """Hold the lock ``path`` while the block runs, with this process recorded as holder.

    When another run holds it: ``wait`` 0 raises :class:`LockBusy` naming that run at
    once; otherwise this says who holds it and waits, ``wait`` seconds at most (None:
    as long as that run takes), then raises ``LockBusy`` with ``fix``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = read_holder(path)
        if wait == 0:
            raise LockBusy(path, what, holder, fix) from None
        limit = "" if wait is None else f" (at most {wait:g} s)"
        print(f"samnet: {what} is held by {describe(holder)}; waiting{limit}: {path}")
        try:
            lock.acquire(timeout=-1 if wait is None else wait)
        except Timeout:
            raise LockBusy(path, what, read_holder(path), fix) from None
    try:
        with atomic_file(holder_path(path)) as handle:
            handle.write(json.dumps(asdict(Holder.this_process())).encode())
        yield
    finally:
        # Before the release: afterwards the record may already be the next holder's.
        holder_path(path).unlink(missing_ok=True)
        lock.release()


def planning_lock(dataset_name: str) -> contextlib.AbstractContextManager[None]:
    """Planning and preprocessing ``dataset_name``: a second run waits for the first,
    then finds its work done."""
    return hold(
        lock_path(dataset_name, "planning"),
        f"planning {dataset_name}",
        wait=None,
        fix="wait for that run to finish planning, or stop it",
    )


def report_lock(dataset_name: str) -> contextlib.AbstractContextManager[None]:
    """Writing ``dataset_name``'s report: two runs ending together write it in turn."""
    return hold(
        lock_path(dataset_name, "report"),
        f"the report of {dataset_name}",
        wait=None,
        fix="wait for that run to finish its report",
    )


def fold_lock_path(dataset_name: str, method_folder: str, fold: int) -> Path:
    return lock_path(dataset_name, f"{method_folder}.fold_{fold}")


def fold_lock(
    dataset_name: str, method_folder: str, fold: int, wait: float = 0
) -> contextlib.AbstractContextManager[None]:
    """Training fold ``fold`` of ``method_folder`` (``TRAINER__PLANS__CONFIGURATION``):
    one run at a time; another run is refused (after ``wait`` seconds) naming this one."""
    return hold(
        fold_lock_path(dataset_name, method_folder, fold),
        f"{method_folder} fold {fold}",
        wait=wait,
        fix="let that run train it (a finished fold is then skipped), or choose other "
        "--folds; the lock frees itself when that process ends",
    )


@contextlib.contextmanager
def training_lock(
    dataset_name: str, method_folder: str, fold: int, wait: float = 0
) -> Iterator[None]:
    """The fold's lock, once no run is planning the dataset: the fold trains on
    finished plans and data (a re-plan with ``--overwrite`` rewrites them)."""
    with fold_lock(dataset_name, method_folder, fold, wait):
        with planning_lock(dataset_name):
            pass
        yield


@contextlib.contextmanager
def every_fold_lock(dataset_name: str, why: str) -> Iterator[None]:
    """Hold the lock of every fold of ``dataset_name`` ever trained, refusing at once
    when a run is training one: what rewrites the data folds train from needs it."""
    folder = preprocessed_folder() / dataset_name / LOCK_FOLDER
    with contextlib.ExitStack() as stack:
        for path in sorted(folder.glob(FOLD_LOCK_PATTERN)):
            what = path.name.removesuffix(".lock").replace(".fold_", " fold ")
            stack.enter_context(
                hold(
                    path,
                    what,
                    wait=0,
                    fix=f"wait for that run to finish, or stop it, before {why}",
                )
            )
        yield
