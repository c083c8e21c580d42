"""The one error type samnet raises for bad input, and how commands report it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

from samnet.core.termination import sigterm_as_exit


class SamnetError(Exception):
    """Bad input or state a user can fix: names the file, the problem and the fix."""

    def __init__(self, path: str | Path | None, problem: str, fix: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}\n  fix: {fix}")


def cli_entry(
    main: Callable[[list[str] | None], int | None],
) -> Callable[[list[str] | None], int]:
    """Wrap a command's ``main`` so a :class:`SamnetError` prints cleanly and exits 1,
    and SIGTERM (a SLURM time limit) cleans up as an error does (``sigterm_as_exit``)."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            with sigterm_as_exit():
                return main(argv) or 0
        except SamnetError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1

    return wrapped
