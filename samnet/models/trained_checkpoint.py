"""Checkpoints of what was trained: trained tensors plus the base weights' identity.

A LoRA or decoder-only checkpoint is a small fraction of the model: the frozen base
weights are not repeated, only named (backbone, sha256), and loading checks that the
model was built from the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samnet.core.atomic import atomic_file
from samnet.core.errors import SamnetError
from samnet.models.peft import CONFIG_ATTRIBUTE, PeftConfig

FORMAT = "samnet-trained-1"
# The base weights are the same when these agree; other keys (e.g. "path") only inform.
BASE_IDENTITY = ("backbone", "sha256")


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training changes, by state-dict name (the tensors themselves, not copies).

    Parameters with ``requires_grad``, and the persistent buffers of modules that own
    one (running statistics of trained BatchNorm layers). Frozen BatchNorm layers keep
    their statistics (see ``apply_peft``), so nothing else changes.
    """
    every_parameter = {
        name for name, _ in model.named_parameters(remove_duplicate=False)
    }
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    owners = {name.rpartition(".")[0] for name in trained}
    return {
        name: tensor
        for name, tensor in model.state_dict(keep_vars=True).items()
        if name in trained
        or (name not in every_parameter and name.rpartition(".")[0] in owners)
    }


def save_trained(model: nn.Module, path: str | Path, base: Mapping[str, Any]) -> None:
    """Write ``trained_state(model)``, the PEFT config and ``base`` to ``path``.

    Arguments:
      model: a model after ``apply_peft`` and training.
      path: the file to write (its folder is created); a temporary file in the same
        folder is renamed onto it, so a crash never leaves a half-written checkpoint.
      base: identity of the base weights, at least ``backbone`` and ``sha256``, e.g.
        ``{"backbone": "lite_medsam", "sha256": "...", "path": "..."}``.
    """
    path = Path(path)
    missing = [key for key in BASE_IDENTITY if key not in base]
    if missing:
        raise ValueError(f"base must name {BASE_IDENTITY}, missing {missing}")
    config = getattr(model, CONFIG_ATTRIBUTE, None)
    payload = {
        "format": FORMAT,
        "base": dict(base),
        "peft": None if config is None else config.to_dict(),
        "state": {
            name: tensor.detach().cpu().clone()
            for name, tensor in trained_state(model).items()
        },
    }
    with atomic_file(path) as handle:
        torch.save(payload, handle)


def load_trained(
    model: nn.Module, path: str | Path, expected_base: Mapping[str, Any]
) -> None:
    """Load a ``save_trained`` checkpoint into ``model``, in place.

    ``model`` must be built from the base weights ``expected_base`` names and adapted
    with the same PEFT config. Raises ``SamnetError`` when the file is missing or not
    such a checkpoint, was trained on other base weights or another PEFT config, or
    its tensors do not match what trains in ``model`` (missing, unexpected, shape).
    """
    path = Path(path)
    payload = _read(path)
    for key in BASE_IDENTITY:
        if payload["base"].get(key) != expected_base.get(key):
            raise SamnetError(
                path,
                f"trained on base weights with {key} {payload['base'].get(key)!r}, "
                f"but the model was built from {key} {expected_base.get(key)!r}",
                f"build the model from the base weights it was trained on "
                f"({payload['base']}), or retrain on these",
            )
    config = getattr(model, CONFIG_ATTRIBUTE, None)
    saved_config = None
    if payload["peft"] is not None:
        saved_config = PeftConfig.from_dict(payload["peft"], path)
    if saved_config != config:
        raise SamnetError(
            path,
            f"trained with PEFT config {saved_config}, the model has {config}",
            "apply the checkpoint's PEFT config to a fresh model before loading",
        )
    targets = trained_state(model)
    saved = payload["state"]
    _check_names(path, targets, saved)
    with torch.no_grad():
        for name, tensor in targets.items():
            tensor.copy_(saved[name])


def _read(path: Path) -> dict[str, Any]:
    fix = "give the file save_trained wrote, or retrain"
    if not path.is_file():
        raise SamnetError(path, "no trained checkpoint here", fix)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise SamnetError(path, f"unreadable checkpoint ({error})", fix) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SamnetError(path, f"not a {FORMAT} checkpoint", fix)
    return payload


def _check_names(
    path: Path, targets: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor]
) -> None:
    fix = "load into a model built and adapted as the one that was trained"
    missing = sorted(set(targets) - set(saved))
    if missing:
        raise SamnetError(path, f"lacks trained tensors {_some(missing)}", fix)
    unexpected = sorted(set(saved) - set(targets))
    if unexpected:
        raise SamnetError(
            path, f"holds tensors the model does not train {_some(unexpected)}", fix
        )
    mismatched = [
        f"{name} {tuple(saved[name].shape)} vs {tuple(tensor.shape)}"
        for name, tensor in targets.items()
        if saved[name].shape != tensor.shape
    ]
    if mismatched:
        raise SamnetError(path, f"shapes differ: {_some(mismatched)}", fix)


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown if len(names) <= 5 else f"{shown} and {len(names) - 5} more"
