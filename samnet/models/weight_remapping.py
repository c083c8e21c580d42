"""Weight files from the SAM fine-tuning projects made into a backbone's state dict: what is
remapped, what is dropped, and what does not fit.

The layouts users bring (key names read in each project's own code):
- wrapped: the state dict under ``"model"`` (SAM-Med2D; MedSAM's and LiteMedSAM's training
  scripts), ``"state_dict"`` or ``"model_state_dict"``; the other entries (optimizer,
  epoch) are ignored;
- prefixed: ``"module."`` (DataParallel), ``"sam."`` or another path before every key;
- the seed study's LoRA (Gu et al. 2024, github mazurowski-lab/finetune-SAM
  ``models/sam_LoRa.py``, after SAMed): a wrapped linear layer keeps its base weights
  under ``<layer>.qkv.`` or ``<layer>.proj.`` and adds ``B A x`` with scale 1
  (``linear_{a,b}_{q,v}`` on the query and value rows of the encoder's qkv, ``w_a``/``w_b``
  on the decoder's projections): merged exactly into the base weights;
- LoRA in other layouts (peft's ``lora_A``/``base_layer``, loralib's ``lora_A``): their
  scale alpha / r is not in the file, so samnet cannot merge them (``unscaled_lora_keys``;
  the loader refuses the file);
- adapters (SAM-Med2D's ``Adapter`` in each encoder block; Medical SAM Adapter's and the
  seed study's ``MLP_Adapter``, ``Space_Adapter``, ``Depth_Adapter``): dropped, because
  samnet trains its own PEFT;
- another number of mask tokens (the seed study sets ``num_multimask_outputs`` to its
  class count): the tokens both have load with their hypernetwork MLPs and IoU-head rows;
  SAM's further tokens start as copies of token 0, the file's extra ones are dropped;
- trained at another input size (SAM-Med2D: 256 px): a ViT's position embedding and its
  global-attention blocks' relative-position tables load at their trained size;
  ``backbone_resize`` resamples the embedding to the size samnet runs at, and
  segment_anything's ``get_rel_pos`` the tables at every forward.
Any other difference from the backbone's state dict (a missing key, an unknown key,
another shape) is a problem: the file holds other weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

# Where training scripts put the state dict inside a checkpoint, in the order tried.
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
# The parts of a SAM; whatever stands before them in every key is a prefix.
SAM_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
# How many keys a message names before it only counts the rest.
SHOWN_KEYS = 5

# The seed study's LoRA layers: the wrapped layer's base weights and the low-rank factors.
LORA_QKV_BASE = re.compile(r"^(.+\.qkv)\.qkv\.(weight|bias)$")
LORA_QKV_FACTOR = re.compile(r"^(.+\.qkv)\.linear_([ab])_([qv])\.weight$")
LORA_PROJ_BASE = re.compile(r"^(.+_proj)\.proj\.(weight|bias)$")
LORA_PROJ_FACTOR = re.compile(r"^(.+_proj)\.w_([ab])\.weight$")
# LoRA whose scale lives outside the state dict: peft (lora_A/lora_B/lora_magnitude_vector,
# base_layer) and loralib (lora_A/lora_B).
UNSCALED_LORA = re.compile(r"(^|\.)(lora_\w+|base_layer)(\.|$)")

MASK_TOKENS = "mask_decoder.mask_tokens.weight"
HYPERNETWORK_MLP = re.compile(r"^mask_decoder\.output_hypernetworks_mlps\.(\d+)\.")
IOU_HEAD = "mask_decoder.iou_prediction_head."

POS_EMBED = "image_encoder.pos_embed"
REL_POS_TABLE = re.compile(r"^(image_encoder\.blocks\.\d+)\.attn\.rel_pos_[hw]$")


@dataclass(frozen=True)
class Remapped:
    """A weight file's tensors as a model's state dict, and what it took.

    Attributes:
      state: tensors by the model's state-dict names.
      notes: what was changed to get there, one sentence each, for the user.
      problems: why ``state`` does not fit the model (keys missing, unknown, of another
        shape); empty when it fits.
      trained_shapes: parameters the model takes at the file's shape (``take_trained_shapes``).
    """

    state: dict[str, torch.Tensor]
    notes: tuple[str, ...]
    problems: tuple[str, ...]
    trained_shapes: tuple[str, ...]


def unwrap(content: object) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The state dict in a loaded checkpoint, and a note when it was wrapped.

    Returns ``(None, None)`` when ``content`` is neither a mapping of names to tensors
    nor one under a key of ``WRAPPER_KEYS``.
    """
    if _is_state_dict(content):
        return dict(content), None
    if not isinstance(content, Mapping):
        return None, None
    for key in WRAPPER_KEYS:
        if _is_state_dict(content.get(key)):
            others = sorted(str(other) for other in content if other != key)
            ignored = f" (ignored: {', '.join(others)})" if others else ""
            return dict(content[key]), f"unwrapped the weights under {key!r}{ignored}"
    return None, None


def strip_prefix(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], str | None]:
    """``state`` without the one prefix its SAM keys share (``"module."``, ``"sam."``), and
    a note. Unchanged when they share none, or differ in it (the mismatch is then reported
    by ``remap_state``); keys without the prefix stay as they are."""
    prefixes = {_sam_prefix(key) for key in state} - {None}
    if len(prefixes) != 1 or prefixes == {""}:
        return dict(state), None
    (prefix,) = prefixes
    stripped = {key.removeprefix(prefix): tensor for key, tensor in state.items()}
    count = sum(key.startswith(prefix) for key in state)
    return stripped, f"stripped the key prefix {prefix!r} from {count} keys"


def unscaled_lora_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of LoRA layers whose scale is not in the file (peft, loralib), sorted."""
    return sorted(key for key in state if UNSCALED_LORA.search(key))


def remap_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Remapped:
    """``state`` (unwrapped, prefix stripped) made into ``model``'s state dict.

    Merges the seed study's LoRA, drops adapters, matches the mask-token count and keeps
    a ViT's input-size-dependent tensors at their trained size; ``state`` is not changed.
    ``model`` only lends its state's names and shapes (it may be on the meta device).
    """
    model_state = model.state_dict()
    remapped = dict(state)
    notes = [
        note
        for note in (
            merge_seed_study_lora(remapped, model_state),
            drop_adapters(remapped),
            match_mask_tokens(remapped, model_state),
        )
        if note
    ]
    trained_shapes, note = trained_geometry(model, remapped, model_state)
    if note:
        notes.append(note)
    return Remapped(
        remapped,
        tuple(notes),
        mismatches(remapped, model_state, trained_shapes),
        trained_shapes,
    )


def merge_seed_study_lora(
    state: dict[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> str | None:
    """Merge the seed study's LoRA layers into their base weights, in place: ``W + B A``.

    ``A`` is ``r x in``, ``B`` is ``out x r``; on an encoder qkv (``3 dim x dim``) the query
    factors add to rows ``[:dim]``, the value factors to rows ``[-dim:]``, as their forward
    adds them. Factors without a partner or base weight, or of shapes that do not add up,
    are left in ``state``, where they show as unknown keys.
    """
    renamed = 0
    for key in list(state):
        match = LORA_QKV_BASE.match(key) or LORA_PROJ_BASE.match(key)
        target = match and f"{match[1]}.{match[2]}"
        if target and target in model_state and target not in state:
            state[target] = state.pop(key)
            renamed += 1
    factors: dict[tuple[str, str], dict[str, str]] = {}
    for key in state:
        if match := LORA_QKV_FACTOR.match(key):
            factors.setdefault((match[1], match[3]), {})[match[2]] = key
        elif match := LORA_PROJ_FACTOR.match(key):
            factors.setdefault((match[1], "all"), {})[match[2]] = key
    merged = set()
    for (layer, rows), keys in factors.items():
        weight = state.get(f"{layer}.weight")
        if weight is None or keys.keys() != {"a", "b"}:
            continue
        a, b = state[keys["a"]], state[keys["b"]]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            continue
        dim = a.shape[1]
        span = {"q": slice(0, dim), "v": slice(weight.shape[0] - dim, None)}.get(
            rows, slice(None)
        )
        if weight[span].shape != (b.shape[0], a.shape[1]):
            continue
        combined = weight.clone()
        combined[span] += (b.float() @ a.float()).to(weight.dtype)
        state[f"{layer}.weight"] = combined
        del state[keys["a"]], state[keys["b"]]
        merged.add(layer)
    if not (merged or renamed):
        return None
    counts = {
        part.removesuffix("."): sum(layer.startswith(part) for layer in merged)
        for part in SAM_PARTS
    }
    where = ", ".join(
        f"{count} in the {part}" for part, count in counts.items() if count
    )
    return (
        f"renamed {renamed} base tensors of the seed study's LoRA layers "
        "(<layer>.qkv.qkv.* -> <layer>.qkv.*, <layer>_proj.proj.* -> <layer>_proj.*) and "
        f"merged their LoRA into {len(merged)} linear layers"
        + (f" ({where})" if where else "")
        + " as W + B A (their scale is 1)"
    )


def drop_adapters(state: dict[str, torch.Tensor]) -> str | None:
    """Remove every adapter tensor from ``state``, in place; a note naming them."""
    modules: dict[str, int] = {}
    for key in list(state):
        module = _adapter_module(key)
        if module is not None:
            modules[module] = modules.get(module, 0) + 1
            del state[key]
    if not modules:
        return None
    named = describe_keys(sorted(modules, key=_in_block_order), "", "adapter module")
    return (
        f"dropped {sum(modules.values())} adapter tensors in {named}; samnet trains its "
        "own PEFT and does not run other projects' adapters, so what they learned is not "
        "used (the rest of the network loads as it was trained with them)"
    )


def match_mask_tokens(
    state: dict[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> str | None:
    """Fit a mask decoder with another number of mask tokens to the model's, in place.

    The first ``min(file, model)`` tokens load with their hypernetwork MLPs and IoU-head
    rows; the file's extra ones are dropped, and the model's further tokens start as
    copies of the file's token 0 (with its MLP and row): a fixed function of the file,
    so that the weights' identity stays the file's sha256.
    """
    tokens, own = state.get(MASK_TOKENS), model_state.get(MASK_TOKENS)
    if tokens is None or own is None or tokens.shape[1:] != own.shape[1:]:
        return None
    have, want = len(tokens), len(own)
    if have == want:
        return None
    shared = min(have, want)
    for key in list(state):
        match = HYPERNETWORK_MLP.match(key)
        if match and int(match[1]) >= want:
            del state[key]
        elif match and int(match[1]) == 0:
            for index in range(have, want):
                copy = f"{key[: match.start(1)]}{index}{key[match.end(1) :]}"
                state[copy] = state[key]
    per_token = [MASK_TOKENS] + [
        key
        for key in state
        if key.startswith(IOU_HEAD)
        and key in model_state
        and state[key].shape[:1] == (have,)
        and model_state[key].shape == (want, *state[key].shape[1:])
    ]
    for key in per_token:
        rows = state[key]
        state[key] = torch.cat(
            [rows[:shared], rows[:1].expand(want - shared, *rows.shape[1:])]
        )
    rest = (
        f"{_tokens(have, want)} start as copies of token 0"
        if have < want
        else f"the file's {_tokens(want, have)} are dropped"
    )
    return (
        f"the file's mask decoder has {have} mask tokens, samnet's SAM {want}: "
        f"{_tokens(0, shared)} loaded with their hypernetwork MLPs and IoU-head rows, "
        f"{rest}; samnet's prompt-free class head starts from token 0"
    )


def trained_geometry(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
) -> tuple[tuple[str, ...], str | None]:
    """The input-size-dependent ViT tensors ``state`` has at another size, and a note.

    Those are the position embedding (``1 x g x g x C``, same C) and the relative-position
    tables of global-attention blocks (``L x head_dim``); window-attention tables depend
    on the window only, so another length there is a mismatch.
    """
    keys, parts = [], []
    position, own = state.get(POS_EMBED), model_state.get(POS_EMBED)
    if (
        position is not None
        and own is not None
        and position.dim() == 4
        and position.shape[0] == 1
        and position.shape[1] == position.shape[2]
        and position.shape[3] == own.shape[3]
        and position.shape != own.shape
    ):
        keys.append(POS_EMBED)
        grid, native = position.shape[1], own.shape[1]
        size = grid * model.get_submodule("image_encoder.patch_embed.proj").stride[0]
        parts.append(
            f"the position embedding at {grid} x {grid} patches (SAM's: {native} x "
            f"{native}; trained at {size} px, which --input-size {size} runs unresampled)"
        )
    tables = [
        key
        for key, table in state.items()
        if (match := REL_POS_TABLE.match(key))
        and key in model_state
        and getattr(model.get_submodule(match[1]), "window_size", None) == 0
        and table.dim() == 2
        and table.shape[1] == model_state[key].shape[1]
        and table.shape[0] != model_state[key].shape[0]
    ]
    if tables:
        keys += tables
        lengths = sorted({state[key].shape[0] for key in tables})
        native = sorted({model_state[key].shape[0] for key in tables})
        blocks = len({key.rpartition(".")[0] for key in tables})
        parts.append(
            f"the relative-position tables of {blocks} global-attention "
            f"block{'' if blocks == 1 else 's'} at length {', '.join(map(str, lengths))} (SAM's: {', '.join(map(str, native))})"
        )
    if not keys:
        return (), None
    return tuple(keys), (
        f"loaded {' and '.join(parts)} at their trained size: samnet resamples them to "
        "the input size it runs at"
    )


def take_trained_shapes(
    model: nn.Module, state: Mapping[str, torch.Tensor], keys: tuple[str, ...]
) -> None:
    """Give ``model``'s parameters ``keys`` the shape they have in ``state``, so that a
    strict ``load_state_dict`` fills them (their values are then the file's)."""
    for key in keys:
        owner, _, name = key.rpartition(".")
        module = model.get_submodule(owner)
        old = getattr(module, name)
        replacement = torch.empty(state[key].shape, dtype=old.dtype, device=old.device)
        setattr(
            module, name, nn.Parameter(replacement, requires_grad=old.requires_grad)
        )


def mismatches(
    state: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
    trained_shapes: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Each kind of difference between ``state`` and ``model_state``, described; the keys
    of ``trained_shapes`` may differ in shape."""
    missing = sorted(model_state.keys() - state.keys())
    unknown = sorted(state.keys() - model_state.keys())
    other_shape = sorted(
        f"{key} (file {tuple(state[key].shape)}, model {tuple(model_state[key].shape)})"
        for key in model_state.keys() & state.keys()
        if key not in trained_shapes and state[key].shape != model_state[key].shape
    )
    return tuple(
        describe_keys(keys, kind)
        for keys, kind in (
            (missing, "missing from the file"),
            (unknown, "unknown to the model"),
            (other_shape, "with another shape"),
        )
        if keys
    )


def describe_keys(keys: list[str], kind: str, noun: str = "key") -> str:
    """``'3 keys missing from the file: a, b, c'``, naming at most ``SHOWN_KEYS`` keys."""
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    counted = f"{len(keys)} {noun}{'' if len(keys) == 1 else 's'}"
    return f"{' '.join(filter(None, (counted, kind)))}: {shown}{more}"


def _is_state_dict(content: object) -> bool:
    return (
        isinstance(content, Mapping)
        and len(content) > 0
        and all(
            isinstance(key, str) and isinstance(value, torch.Tensor)
            for key, value in content.items()
        )
    )


def _sam_prefix(key: str) -> str | None:
    """What stands before the first SAM part in ``key`` ("" for a SAM key), or None."""
    starts = [
        index
        for part in SAM_PARTS
        if (index := key.find(part)) >= 0 and (index == 0 or key[index - 1] == ".")
    ]
    return key[: min(starts)] if starts else None


def _adapter_module(key: str) -> str | None:
    """The module path up to the adapter in ``key`` (``"...blocks.3.Adapter"``), or None."""
    parts = key.split(".")
    for index, part in enumerate(parts[:-1]):
        if "adapter" in part.lower():
            return ".".join(parts[: index + 1])
    return None


def _in_block_order(key: str) -> list[str | int]:
    """Sort key putting ``blocks.2`` before ``blocks.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _tokens(first: int, end: int) -> str:
    """``'token 2'`` or ``'tokens 2-3'`` for tokens ``first`` to ``end - 1``."""
    return f"token {first}" if end - first == 1 else f"tokens {first}-{end - 1}"
