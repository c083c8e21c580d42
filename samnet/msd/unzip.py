"""Reading a submission zip safely: its layout (``TaskNN_Name/CASE.nii.gz`` at the top level)
and limits checked before anything is extracted.

What a zip declares is checked first (entry count, sizes, compression ratio: a zip bomb is
refused whole); entries with unsafe names (absolute, ``..``, backslashes, control
characters), outside a task folder, repeated or encrypted are reported as problems and not
extracted.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from samnet.core.errors import SamnetError
from samnet.preprocessing.checks.dataset_json import Problem

TASK_NAME = re.compile(r"^Task\d{2,3}_\w+$")
ZIP_LAYOUT_FIX = "zip each task as TaskNN_Name/CASE.nii.gz (samnet_export_msd does)"
# What a zip may extract: ample for all of the MSD (887 test images over its 10 tasks,
# label maps of a few MiB each), far below what a zip bomb writes.
MAX_MEMBERS = 2000
MAX_MEMBER_BYTES = 1 << 30
MAX_TOTAL_BYTES = 8 << 30
# A .nii.gz is compressed already, so zipping shrinks it little; an entry over
# RATIO_FROM_BYTES that shrank more than MAX_RATIO times is a bomb (or not a .nii.gz).
MAX_RATIO = 100
RATIO_FROM_BYTES = 1 << 20
# ZipInfo.flag_bits: the entry is encrypted.
ENCRYPTED = 0x1


def unsafe_name(name: str) -> str | None:
    """Why a zip entry's name cannot be extracted as it says, or None: absolute, with
    ``.``/``..`` or empty parts, a backslash or a drive, control characters."""
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return "leaves its folder (an absolute path, or a '.', '..' or empty part)"
    if "\\" in name or ":" in name:
        return "holds a backslash or a drive colon"
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        return "holds control characters"
    return None


def check_limits(submission: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip that would extract more than a submission can hold, before any of it is.

    The sizes are the ones the zip declares; zipfile never extracts more than an entry
    declares (it stops there, and a wrong CRC is an error).
    """
    fix = (
        "zip only the predictions, one .nii.gz per test image (samnet_export_msd does)"
    )
    if len(infos) > MAX_MEMBERS:
        raise SamnetError(
            submission,
            f"holds {len(infos)} entries; a submission has at most {MAX_MEMBERS}",
            fix,
        )
    total = sum(info.file_size for info in infos)
    if total > MAX_TOTAL_BYTES:
        raise SamnetError(
            submission,
            f"would extract {total:,} bytes; a submission holds at most "
            f"{MAX_TOTAL_BYTES:,}",
            fix,
        )
    for info in infos:
        where = entry_path(submission, info)
        if info.file_size > MAX_MEMBER_BYTES:
            raise SamnetError(
                where,
                f"would extract {info.file_size:,} bytes; a prediction holds at most "
                f"{MAX_MEMBER_BYTES:,}",
                fix,
            )
        if (
            info.file_size > RATIO_FROM_BYTES
            and info.file_size > MAX_RATIO * info.compress_size
        ):
            raise SamnetError(
                where,
                f"is compressed {info.file_size / max(info.compress_size, 1):.0f} times "
                f"(at most {MAX_RATIO} for a .nii.gz, which is compressed already): a zip "
                "bomb, or not a .nii.gz",
                fix,
            )


def entry_path(submission: Path, info: zipfile.ZipInfo) -> Path:
    """Where a message says an entry is: in the zip, even when its name is absolute."""
    return submission / info.filename.lstrip("/")


def member_problem(
    submission: Path, info: zipfile.ZipInfo, seen: set[str]
) -> Problem | None:
    """Why a zip entry is not extracted, or None when it is a ``TaskNN_Name/FILE`` to extract."""
    where = entry_path(submission, info)
    unsafe = unsafe_name(info.filename)
    if unsafe:
        return Problem(
            where, f"is named {info.filename!r}, which {unsafe}", ZIP_LAYOUT_FIX
        )
    parts = PurePosixPath(info.filename).parts
    if info.is_dir() or len(parts) != 2 or not TASK_NAME.match(parts[0]):
        return Problem(
            where,
            "is not a file in a TaskNN_Name/ folder at the zip's top level",
            ZIP_LAYOUT_FIX,
        )
    if info.filename in seen:
        return Problem(where, "is in the zip more than once", "zip each file once")
    if info.flag_bits & ENCRYPTED:
        return Problem(where, "is encrypted", "zip it without a password")
    return None


def extract(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, into: Path, where: Path
) -> Problem | None:
    """Extract one entry; one that cannot be (damaged, unknown compression) is a problem."""
    try:
        archive.extract(info, into)
    except (
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        return Problem(
            where,
            f"cannot be extracted ({type(error).__name__}: {error})",
            "zip it again",
        )
    return None


def unpack(submission: Path, into: Path) -> list[Problem]:
    """Extract a zip's ``TaskNN_Name/FILE`` entries into ``into``; the other entries are
    problems. A zip beyond the limits (``check_limits``) is refused whole."""
    try:
        archive = zipfile.ZipFile(submission)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise SamnetError(
            submission, f"is not a readable zip ({error})", "zip it again"
        ) from error
    problems, seen = [], set()
    with archive:
        infos = archive.infolist()
        check_limits(submission, infos)
        for info in infos:
            parts = PurePosixPath(info.filename).parts
            if info.is_dir() and len(parts) == 1 and TASK_NAME.match(parts[0]):
                continue
            problem = member_problem(submission, info, seen)
            seen.add(info.filename)
            if problem is None:
                problem = extract(archive, info, into, entry_path(submission, info))
            if problem is not None:
                problems.append(problem)
    return problems
