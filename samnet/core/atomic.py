"""Write a folder or file all at once: into a temporary sibling, renamed into place on success.

Temporary names carry their writer's process and host, ``.NAME.PID@HOST.RANDOM.partial``
(HOST: the host name and, on Linux, the process-id namespace):
the next writer of ``NAME`` removes what a killed run left (its process on this host has
ended) and never touches what a live run, or a run on another host, is writing. What is
created gets the modes the umask gives, as any file the user writes does, so that a
shared results folder stays readable by the group.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from samnet.core.errors import SamnetError

PARTIAL = ".partial"
# The old content of a folder being replaced, for the moment between two renames.
REPLACED = ".replaced"
_TAGGED = re.compile(r"(\d+)@(.+)\.[0-9a-f]+\.(?:partial|replaced)")


def _host() -> str:
    """This host, and on Linux the process-id namespace: containers sharing a host name
    but not their process ids are told apart."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}~{namespace}"


def _temporary_name(parent: Path, prefix: str, suffix: str) -> Path:
    """A fresh name in ``parent`` tagged with this process and host."""
    tag = f"{os.getpid()}@{_host()}.{secrets.token_hex(8)}"
    return parent / f"{prefix}{tag}{suffix}"


def _writer_ended(tail: str) -> bool:
    """Whether the run that named an entry ``prefix + tail`` ended: it ran on this host
    and its process is gone. Untagged names, other hosts and live processes: no."""
    match = _TAGGED.fullmatch(tail)
    if match is None or match[2] != _host():
        return False
    pid = int(match[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def leftovers(parent: Path, prefix: str) -> list[Path]:
    """The temporary entries ``prefix``* in ``parent`` that killed runs left."""
    if not parent.is_dir():
        return []
    return sorted(
        entry
        for entry in parent.iterdir()
        if entry.name.startswith(prefix) and _writer_ended(entry.name[len(prefix) :])
    )


def remove(path: Path) -> None:
    """Remove a file, a link or a folder with its content."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(parent: Path, prefix: str) -> None:
    for leftover in leftovers(parent, prefix):
        remove(leftover)


@contextmanager
def scratch_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A hidden work folder ``prefix``* in ``parent``, removed when the block ends, however
    it ends; what killed runs left under the same prefix is removed first."""
    parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(parent, prefix)
    folder = _temporary_name(parent, prefix, PARTIAL)
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _recover(target: Path) -> None:
    """Undo what a run killed while replacing ``target`` left: its old content comes back
    when the new one never arrived, and temporary siblings go."""
    prefix = f".{target.name}."
    for leftover in leftovers(target.parent, prefix):
        if leftover.name.endswith(REPLACED) and not target.exists():
            leftover.rename(target)
        else:
            remove(leftover)


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` when the block succeeds.

    An existing ``target`` is refused unless ``overwrite``; on any error the temporary
    folder is removed and ``target`` is left exactly as it was. Only for folders that
    samnet owns whole: ``overwrite`` replaces everything in ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    if target.exists() and not overwrite:
        raise SamnetError(
            target,
            "already exists",
            "pass --overwrite to replace it, or choose another id/name",
        )
    temporary = _temporary_name(target.parent, f".{target.name}.", PARTIAL)
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if target.exists():
        retired = _temporary_name(target.parent, f".{target.name}.", REPLACED)
        target.rename(retired)
        temporary.rename(target)
        shutil.rmtree(retired)
    else:
        temporary.rename(target)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling path, renamed onto ``target`` when the block succeeds.

    For writers that open by name (``torch.save``, nnU-Net's ``save_checkpoint``): a kill
    mid-write leaves ``target`` as it was, and the next writer removes the leftover.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    remove_leftovers(target.parent, prefix)
    temporary = _temporary_name(target.parent, prefix, PARTIAL)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content replaces ``target`` when the block succeeds
    (``atomic_path``)."""
    with atomic_path(target) as temporary:
        # O_EXCL: a fresh file; mode 0o666 less the umask, as open() gives
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
