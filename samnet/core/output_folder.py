"""Output folders the user names (``-o``): samnet replaces only what it wrote there.

A manifest (``.samnet_outputs.json`` in the folder, unless the caller puts it elsewhere)
lists the entries samnet wrote. ``--overwrite`` replaces and removes those entries and no
other; every other file in the folder is left alone, and a new output that would land on
one is refused before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from samnet.core.atomic import atomic_file, remove, scratch_folder
from samnet.core.errors import SamnetError
from samnet.core.layout import MANIFEST


def refuse_overlap(inputs: Path, output: Path) -> None:
    """Refuse an output folder that is the input folder, inside it or above it."""
    source, target = Path(inputs).resolve(), Path(output).resolve()
    if target == source:
        relation = "is"
    elif target.is_relative_to(source):
        relation = "is inside"
    elif source.is_relative_to(target):
        relation = "holds"
    else:
        return
    raise SamnetError(
        output,
        f"{relation} the input folder {inputs}: outputs would mix with the inputs",
        "choose an output folder outside the input folder and not above it, e.g. "
        f"{source.parent / (source.name + '_segmentations')}",
    )


def written_before(manifest: Path) -> set[str]:
    """The entries the manifest says samnet wrote (none when there is no manifest)."""
    if not manifest.is_file():
        return set()
    fix = f"delete {manifest} and the outputs samnet wrote beside it, then run again"
    try:
        names = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise SamnetError(
            manifest, f"is not samnet's list of outputs ({error})", fix
        ) from None
    if not isinstance(names, list):
        raise SamnetError(manifest, "is not samnet's list of outputs", fix)
    unsafe = [
        n for n in names if not isinstance(n, str) or n in ("", ".", "..") or "/" in n
    ]
    if unsafe:
        raise SamnetError(
            manifest, f"lists names that are not files in it: {unsafe}", fix
        )
    return set(names)


def require_replaceable(
    target: Path, names: Iterable[str], manifest: Path | None = None
) -> None:
    """Refuse when an entry ``names`` holds is in ``target`` and samnet did not write it."""
    manifest = manifest or target / MANIFEST
    ours = written_before(manifest)
    foreign = sorted(n for n in names if n not in ours and os.path.lexists(target / n))
    if foreign:
        raise SamnetError(
            target / foreign[0],
            f"exists and samnet did not write it ({len(foreign)} such output name(s): "
            f"{', '.join(foreign[:5])})",
            f"move those files away or choose another output folder; --overwrite "
            f"replaces only the files samnet wrote (listed in {manifest.name})",
        )


def _record(manifest: Path, names: Iterable[str]) -> None:
    with atomic_file(manifest) as handle:
        handle.write(json.dumps({"files": sorted(names)}, indent=2).encode())


@contextmanager
def own_outputs(
    target: Path,
    overwrite: bool,
    manifest: Path | None = None,
    names: Iterable[str] = (),
) -> Iterator[Path]:
    """Yield a staging folder whose entries go into ``target`` when the block succeeds.

    Arguments:
      target: the output folder; created if needed, never removed.
      overwrite: replace the outputs samnet wrote there before (the manifest's entries,
        removed where the new run has none). Without it ``target`` must be empty or absent.
      manifest: where the list of samnet's entries lives (default ``target/MANIFEST``).
      names: entries the block will write, when known: a clash with a file samnet did not
        write is then refused before the block runs (it always is before anything moves).

    On any error, the staging folder goes and ``target`` is untouched.
    """
    # "-o ." gets a name, a link its real folder: the staging folder is a sibling of it
    target = Path(target).resolve()
    manifest = manifest or target / MANIFEST
    if target.exists() and not target.is_dir():
        raise SamnetError(target, "is a file, not a folder", "choose an output folder")
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise SamnetError(
            target,
            "already exists and is not empty",
            "choose another output folder, or pass --overwrite: it replaces only the "
            f"outputs samnet wrote there (listed in {manifest.name}), never other files",
        )
    require_replaceable(target, names, manifest)
    with scratch_folder(target.parent, f".{target.name}.") as staging:
        yield staging
        _move_in(staging, target, manifest)


def _move_in(staging: Path, target: Path, manifest: Path) -> None:
    """Move the staged entries into ``target``, replacing samnet's earlier outputs only."""
    new = {entry.name for entry in staging.iterdir()}
    old = written_before(manifest)
    require_replaceable(target, new, manifest)
    target.mkdir(parents=True, exist_ok=True)
    # Listed before they move: a run killed from here on leaves every entry it may have
    # written in the manifest, so that the next --overwrite replaces them all.
    _record(manifest, old | new)
    for name in sorted(new):
        # a rename, or a copy where -o is a mount point (another file system)
        shutil.move(staging / name, target / name)
    for name in sorted(old - new):
        remove(target / name)
    _record(manifest, new)
