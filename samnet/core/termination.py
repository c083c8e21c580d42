"""SIGTERM (a SLURM time limit, ``kill``) ends a command the way an error does.

Python's default for SIGTERM ends the process at once: no ``finally`` runs, so hidden
temporary folders stay behind. Inside :func:`sigterm_as_exit` SIGTERM raises
:class:`Terminated` instead, and every cleanup an exception triggers runs.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# What a shell reports for a process SIGTERM ended.
EXIT_STATUS = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """The process got SIGTERM; exits with :data:`EXIT_STATUS` once cleanup has run."""


def _raise_terminated(signum: int, frame: object) -> None:
    # a second SIGTERM, e.g. during a slow cleanup, ends the process at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated(EXIT_STATUS)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block (or the function it decorates), SIGTERM raises :class:`Terminated`.

    Signal handlers belong to the main thread: elsewhere the block runs unchanged.
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
