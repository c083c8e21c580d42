"""SIGTERM inside a command, and in the processes it forks."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from samnet.core.termination import Terminated, sigterm_as_exit


def _report_sigterm(queue: multiprocessing.Queue) -> None:
    blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    queue.put((signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, blocked))


def test_forked_child_starts_with_sigterm_at_its_default():
    # nnU-Net's fork pools: an inherited handler lets a not-yet-started worker lose the
    # SIGTERM of Pool.terminate(), which then waits for it forever.
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with sigterm_as_exit():
        child = context.Process(target=_report_sigterm, args=(queue,))
        child.start()
        default, blocked = queue.get(timeout=60)
        child.join(timeout=60)
    assert default, "the child inherited samnet's SIGTERM handler"
    assert not blocked, "the child was left with SIGTERM blocked"


def test_sigterm_sent_before_the_child_runs_ends_it():
    # SIGTERM is blocked across fork, so one sent at once is pending, not lost, and the
    # child's default ends it when unblocked.
    with sigterm_as_exit():
        pid = os.fork()
        if pid == 0:  # the child: outlive any reasonable wait unless SIGTERM ends it
            time.sleep(60)
            os._exit(0)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_parent_still_turns_sigterm_into_terminated_after_a_fork():
    context = multiprocessing.get_context("fork")
    with pytest.raises(Terminated), sigterm_as_exit():
        child = context.Process(target=time.sleep, args=(0,))
        child.start()
        child.join(timeout=60)
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
