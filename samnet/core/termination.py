"""SIGTERM (a SLURM time limit, ``kill``) ends a command the way an error does.

Python's default for SIGTERM ends the process at once: no ``finally`` runs, so hidden
temporary folders stay behind. Inside :func:`sigterm_as_exit` SIGTERM raises
:class:`Terminated` instead, and every cleanup an exception triggers runs.

Processes forked inside the block (nnU-Net's ``multiprocessing`` pools) start with
SIGTERM at its default. Were they to inherit the handler, ``Pool.terminate()`` could
hang: a worker forked last may not have run yet when the pool, its tasks done, sends it
SIGTERM; the handler only flags the signal, and CPython clears such flags in a new child
(``PyOS_AfterFork_Child``), so the worker lives on, waiting for a task, and the pool waits
for it forever. So SIGTERM is blocked across ``fork``: the child sets the default, then
unblocks it, and a SIGTERM sent meanwhile ends it as it would any process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# What a shell reports for a process SIGTERM ended.
EXIT_STATUS = 128 + signal.SIGTERM
_SIGTERM = {signal.SIGTERM}


class Terminated(SystemExit):
    """The process got SIGTERM; exits with :data:`EXIT_STATUS` once cleanup has run."""


class _ForkState(threading.local):
    """The forking thread's signal mask before the fork blocked SIGTERM; None when the
    fork left it alone (no handler)."""

    mask_before_fork: set[signal.Signals] | None = None


_fork_state = _ForkState()


def _raise_terminated(signum: int, frame: object) -> None:
    # a second SIGTERM, e.g. during a slow cleanup, ends the process at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated(EXIT_STATUS)


def _handler_active() -> bool:
    return signal.getsignal(signal.SIGTERM) is _raise_terminated


def _block_before_fork() -> None:
    if _handler_active():
        _fork_state.mask_before_fork = signal.pthread_sigmask(
            signal.SIG_BLOCK, _SIGTERM
        )


def _restore_in_parent() -> None:
    mask, _fork_state.mask_before_fork = _fork_state.mask_before_fork, None
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _default_in_child() -> None:
    mask, _fork_state.mask_before_fork = _fork_state.mask_before_fork, None
    if mask is not None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


os.register_at_fork(
    before=_block_before_fork,
    after_in_parent=_restore_in_parent,
    after_in_child=_default_in_child,
)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block (or the function it decorates), SIGTERM raises :class:`Terminated`.

    Signal handlers belong to the main thread: elsewhere the block runs unchanged.
    Processes forked within it start with SIGTERM at its default (see the module).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except Terminated:
        print("samnet: stopped by SIGTERM; temporary files removed", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
