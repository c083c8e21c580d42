"""Write a folder or file all at once: into a temporary sibling, renamed into place on success."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from samnet.core.errors import SamnetError


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` when the block succeeds.

    An existing ``target`` is refused unless ``overwrite``; on any error the temporary
    folder is removed and ``target`` is left exactly as it was.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise SamnetError(
            target,
            "already exists",
            "pass --overwrite to replace it, or choose another id/name",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(
        tempfile.mkdtemp(
            prefix=f".{target.name}.", suffix=".partial", dir=target.parent
        )
    )
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if target.exists():
        retired = target.with_name(f".{target.name}.replaced")
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
        temporary.rename(target)
        shutil.rmtree(retired)
    else:
        temporary.rename(target)


@contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content replaces ``target`` when the block succeeds.

    The data goes to a temporary sibling that is renamed onto ``target``: a kill
    mid-write leaves ``target`` as it was, never half-written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
