"""PEFT as configuration: which parts of a SAM model train, and how.

One ``PeftConfig`` expresses every strategy of the Gu et al. (2024) study (backbone x
{decoder, encoder + decoder} x {full, adapter, LoRA}) and more; ``apply_peft`` turns a
base model into the adapted one in place, without copying it.

How the model is read (both SAM ViT and TinyViT encoders, any wrapper around them):

- Parts are the submodules named ``image_encoder``, ``mask_decoder`` and
  ``prompt_encoder`` (attribute names of segment-anything's ``Sam`` and of LiteMedSAM),
  found at any depth.
- A transformer block is a module with a child ``mlp`` and a child whose name contains
  ``attn``: SAM ViT ``blocks.{i}``, TinyViT ``layers.{s}.blocks.{j}``, the two-way
  transformer's ``transformer.layers.{i}``. TinyViT's stage 0 is convolutional and has
  none. Encoder blocks are numbered over this flattened list in forward order, e.g.
  TinyViT-5M (LiteMedSAM, MobileSAM; depths 2, 2, 6, 2) has 10: 0-1 ``layers.1``,
  2-7 ``layers.2``, 8-9 ``layers.3``.
- Attention projections are the ``nn.Linear`` layers of a module whose name contains
  ``attn``: encoder ``attn.qkv``, ``attn.proj``; decoder ``self_attn``,
  ``cross_attn_token_to_image``, ``cross_attn_image_to_token`` and
  ``final_attn_token_to_image``, each ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``.
- MLP layers are the ``nn.Linear`` layers of a block's ``mlp`` (SAM ``lin1``/``lin2``,
  TinyViT ``fc1``/``fc2``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from samnet.core.errors import SamnetError
from samnet.core.peft_choices import (
    ADAPTER_PLACEMENTS,
    DEFAULT_ADAPTER_PLACEMENT,
    LEGACY_ADAPTER_PLACEMENT,
    LORA_TARGETS,
)
from samnet.models.adapter import Adapter, attach_adapters
from samnet.models.lora import LoRALinear

METHODS = ("full", "lora", "adapter", "frozen")
PART_MODULES = {
    "encoder": "image_encoder",
    "decoder": "mask_decoder",
    "prompt_encoder": "prompt_encoder",
}
# Where apply_peft records the config it applied: guards against a second application
# and lets a trained checkpoint state what it was trained with.
CONFIG_ATTRIBUTE = "peft_config"
CONFIG_FIX = (
    "correct the sam.peft block of the plans (see samnet.models.peft.PeftConfig)"
)


@dataclass(frozen=True)
class PeftConfig:
    """What trains in a SAM model; lives in the plans as ``to_dict()``.

    Everything not named here is frozen (``requires_grad`` False), including the prompt
    encoder unless a part names it.

    Attributes:
      method: how ``parts`` are tuned. ``full``: all their parameters; ``lora``: LoRA
        on ``lora_targets`` inside them; ``adapter``: adapters in each of their
        transformer blocks, placed as ``adapter_placement`` says; ``frozen``: nothing,
        only ``trainable_extra``.
      parts: among ``encoder``, ``decoder``, ``prompt_encoder`` (the last only with
        ``full``: it has no attention or MLP blocks).
      full_parts: parts trained in full beside ``method``'s, e.g. LoRA in the encoder
        with the whole decoder trained (``method="lora", parts=("encoder",),
        full_parts=("decoder",)``). Must not repeat a part of ``parts``.
      lora_rank, lora_alpha, lora_dropout: see ``LoRALinear``.
      lora_targets: among ``encoder_attention``, ``encoder_mlp``, ``decoder_attention``;
        targets of parts not in ``parts`` are ignored, so one list serves
        decoder-only and encoder + decoder alike.
      adapter_ratio: adapter bottleneck width as a fraction of the block's channels.
      adapter_placement: one of ``ADAPTER_PLACEMENTS`` (``samnet.models.adapter``
        explains them and the default). ``from_dict`` reads a config without it, written
        before it existed, as ``LEGACY_ADAPTER_PLACEMENT``.
      encoder_blocks: indices of the encoder transformer blocks that get LoRA or
        adapters, over the flattened list (module docstring); negative ones count from
        the end, ``(-2, -1)`` = the last two. None: all.
      trainable_extra: ``fnmatch`` patterns of module or parameter names that always
        train (newly initialised heads, input adapter), e.g. ``"class_head"``,
        ``"*.class_tokens"``. A pattern that matches nothing is an error.
    """

    method: str = "full"
    parts: tuple[str, ...] = ("decoder",)
    full_parts: tuple[str, ...] = ()
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("encoder_attention", "decoder_attention")
    adapter_ratio: float = 0.25
    adapter_placement: str = DEFAULT_ADAPTER_PLACEMENT
    encoder_blocks: tuple[int, ...] | None = None
    trainable_extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("parts", "full_parts", "lora_targets", "trainable_extra"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if self.encoder_blocks is not None:
            object.__setattr__(self, "encoder_blocks", tuple(self.encoder_blocks))
        problems = list(self._problems())
        if problems:
            raise SamnetError(None, "PEFT config: " + "; ".join(problems), CONFIG_FIX)

    def _problems(self) -> Iterator[str]:
        if self.method not in METHODS:
            yield f"method {self.method!r} is not one of {', '.join(METHODS)}"
        for field in ("parts", "full_parts"):
            for part in getattr(self, field):
                if part not in PART_MODULES:
                    yield f"{field}: {part!r} is not one of {', '.join(PART_MODULES)}"
        if set(self.parts) & set(self.full_parts):
            yield f"parts {self.parts} and full_parts {self.full_parts} overlap"
        if self.method in ("lora", "adapter") and "prompt_encoder" in self.parts:
            yield f"{self.method} cannot go into the prompt encoder: use full_parts"
        if self.method == "lora":
            yield from self._lora_problems()
        if self.adapter_ratio <= 0:
            yield f"adapter_ratio must be > 0, got {self.adapter_ratio}"
        if self.adapter_placement not in ADAPTER_PLACEMENTS:
            yield (
                f"adapter_placement {self.adapter_placement!r} is not one of "
                f"{', '.join(ADAPTER_PLACEMENTS)}"
            )
        if self.encoder_blocks is not None:
            if len(set(self.encoder_blocks)) != len(self.encoder_blocks):
                yield f"encoder_blocks {self.encoder_blocks} repeat a block"
            if not self.adapts_encoder:
                yield "encoder_blocks is set, but no LoRA or adapter is in the encoder"

    def _lora_problems(self) -> Iterator[str]:
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            yield f"lora_rank must be an integer >= 1, got {self.lora_rank!r}"
        if self.lora_alpha <= 0:
            yield f"lora_alpha must be > 0, got {self.lora_alpha}"
        if not 0 <= self.lora_dropout < 1:
            yield f"lora_dropout must be in [0, 1), got {self.lora_dropout}"
        for target in self.lora_targets:
            if target not in LORA_TARGETS:
                yield f"lora target {target!r} is not one of {', '.join(LORA_TARGETS)}"
        if not self.active_lora_targets:
            yield f"no lora_targets {self.lora_targets} lie in parts {self.parts}"

    @property
    def active_lora_targets(self) -> tuple[str, ...]:
        """The LoRA targets inside ``parts`` (empty unless the method is LoRA)."""
        if self.method != "lora":
            return ()
        return tuple(t for t in self.lora_targets if t.split("_")[0] in self.parts)

    @property
    def adapts_encoder(self) -> bool:
        """Whether LoRA or adapters go into encoder blocks."""
        if self.method == "adapter":
            return "encoder" in self.parts
        return any(t.startswith("encoder") for t in self.active_lora_targets)

    @property
    def fully_trained_parts(self) -> tuple[str, ...]:
        """Parts whose every parameter trains."""
        return (self.parts if self.method == "full" else ()) + self.full_parts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: str | Path | None = None
    ) -> PeftConfig:
        """The config from ``to_dict()`` output (missing keys take defaults, but a
        missing ``adapter_placement`` is ``LEGACY_ADAPTER_PLACEMENT``: plans and
        checkpoints from before the field rebuild the network they trained).

        ``source`` (e.g. the plans file) is named in errors.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SamnetError(
                source,
                f"PEFT config: unknown keys {unknown}",
                f"use only {sorted(known)}",
            )
        try:
            return cls(**{"adapter_placement": LEGACY_ADAPTER_PLACEMENT, **data})
        except SamnetError as error:
            raise SamnetError(source, error.problem, error.fix) from None


def apply_peft(model: nn.Module, config: PeftConfig) -> nn.Module:
    """Make ``model`` train as ``config`` says, in place; returns ``model``.

    Freezes every parameter, unfreezes the fully trained parts, inserts LoRA or
    adapters (new parameters train; at this point the output is unchanged), unfreezes
    ``trainable_extra``, and makes frozen BatchNorm layers normalise with their running
    statistics even in training mode (TinyViT's convolutions carry BatchNorm), so a
    frozen layer computes what it did in pre-training and its statistics do not
    drift. Load base weights before, not after: LoRA and adapter parameters are not in
    a base checkpoint (base parameter names are unchanged).

    Raises ``SamnetError`` when PEFT was already applied, a needed part is missing, or
    ``encoder_blocks`` or a ``trainable_extra`` pattern does not fit the model.
    """
    _refuse_second_application(model)
    model.requires_grad_(False)
    for part in config.fully_trained_parts:
        find_part(model, part).requires_grad_(True)
    if config.method == "lora":
        for parent, name, linear in list(_lora_sites(model, config)):
            wrapped = LoRALinear(
                linear, config.lora_rank, config.lora_alpha, config.lora_dropout
            )
            setattr(parent, name, wrapped)
    if config.method == "adapter":
        for block in list(_adapter_blocks(model, config)):
            attach_adapters(block, config.adapter_placement, config.adapter_ratio)
    _unfreeze_extra(model, config.trainable_extra)
    _hold_frozen_batchnorm_statistics(model)
    setattr(model, CONFIG_ATTRIBUTE, config)
    return model


def find_part(model: nn.Module, part: str) -> nn.Module:
    """The one submodule of ``model`` for ``part`` (``encoder``, ``decoder``, ...)."""
    attribute = PART_MODULES[part]
    found = [
        module
        for name, module in model.named_modules()
        if name.rpartition(".")[2] == attribute
    ]
    if len(found) != 1:
        raise SamnetError(
            None,
            f"PEFT needs exactly one {attribute!r} module for the {part}, "
            f"the model has {len(found)}",
            f"build the network around a SAM model whose {part} is named {attribute}",
        )
    return found[0]


def transformer_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, block)`` of the transformer blocks inside ``module``, in forward order.

    A block has a child ``mlp`` and a child whose name contains ``attn``; modules are
    listed in registration order, which is forward order in SAM ViT, TinyViT and the
    two-way transformer.
    """
    return [
        (name, block)
        for name, block in module.named_modules()
        if _is_transformer_block(block)
    ]


def _is_transformer_block(module: nn.Module) -> bool:
    children = dict(module.named_children())
    return "mlp" in children and any("attn" in name for name in children)


def selected_encoder_blocks(
    encoder: nn.Module, indices: tuple[int, ...] | None
) -> list[nn.Module]:
    """The encoder blocks ``indices`` picks from ``transformer_blocks`` (None: all)."""
    blocks = [block for _, block in transformer_blocks(encoder)]
    if indices is None:
        return blocks
    outside = [i for i in indices if not -len(blocks) <= i < len(blocks)]
    if outside:
        raise SamnetError(
            None,
            f"encoder_blocks {outside} do not exist: the encoder has {len(blocks)} "
            "transformer blocks",
            f"use 0..{len(blocks) - 1}, or -1..-{len(blocks)} to count from the end",
        )
    return [blocks[i] for i in indices]


def _lora_sites(
    model: nn.Module, config: PeftConfig
) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    """``(parent, attribute, linear)`` of each layer that gets LoRA."""
    targets = config.active_lora_targets
    if any(t.startswith("encoder") for t in targets):
        encoder = find_part(model, "encoder")
        for block in selected_encoder_blocks(encoder, config.encoder_blocks):
            for parent_name, parent in block.named_children():
                is_attention = "attn" in parent_name
                if (is_attention and "encoder_attention" in targets) or (
                    parent_name == "mlp" and "encoder_mlp" in targets
                ):
                    yield from _linear_children(parent)
    if "decoder_attention" in targets:
        for name, parent in find_part(model, "decoder").named_modules():
            if "attn" in name.rpartition(".")[2]:
                yield from _linear_children(parent)


def _linear_children(
    parent: nn.Module,
) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    for name, child in list(parent.named_children()):
        if isinstance(child, nn.Linear):
            yield parent, name, child


def _adapter_blocks(model: nn.Module, config: PeftConfig) -> Iterator[nn.Module]:
    """The transformer blocks that get adapters."""
    if "encoder" in config.parts:
        encoder = find_part(model, "encoder")
        yield from selected_encoder_blocks(encoder, config.encoder_blocks)
    if "decoder" in config.parts:
        for _, block in transformer_blocks(find_part(model, "decoder")):
            yield block


def _unfreeze_extra(model: nn.Module, patterns: tuple[str, ...]) -> None:
    modules = dict(model.named_modules())
    parameters = dict(model.named_parameters())
    for pattern in patterns:
        matched = [n for n in modules if n and fnmatch.fnmatchcase(n, pattern)]
        matched += [n for n in parameters if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise SamnetError(
                None,
                f"trainable_extra pattern {pattern!r} matches no module or parameter",
                "name a module of the network, e.g. 'class_head' or 'input_adapter'",
            )
        for name in matched:
            if name in modules:
                modules[name].requires_grad_(True)
            else:
                parameters[name].requires_grad_(True)


def _hold_frozen_batchnorm_statistics(model: nn.Module) -> None:
    for module in model.modules():
        is_batchnorm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if is_batchnorm and not any(p.requires_grad for p in module.parameters()):
            module.register_forward_pre_hook(_use_running_statistics)


def _use_running_statistics(module: nn.Module, inputs: tuple) -> None:
    module.training = False


def _refuse_second_application(model: nn.Module) -> None:
    applied = getattr(model, CONFIG_ATTRIBUTE, None) is not None or any(
        isinstance(module, (LoRALinear, Adapter)) for module in model.modules()
    )
    if applied:
        raise SamnetError(
            None,
            "PEFT is already applied to this model",
            "build a fresh model from the base weights and apply PEFT once",
        )


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer should get: those with ``requires_grad``.

    Frozen parameters stay out of the optimizer, so weight decay never touches them.
    """
    return [p for p in model.parameters() if p.requires_grad]


@dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameters; ``str()`` is the one-line report."""

    trainable: int
    total: int

    def __str__(self) -> str:
        percent = 100.0 * self.trainable / max(self.total, 1)
        return (
            f"trainable {self.trainable / 1e6:.2f}M / {self.total / 1e6:.2f}M "
            f"({percent:.1f}%)"
        )


def count_parameters(model: nn.Module) -> ParameterCount:
    """Trainable and total parameters of ``model`` (shared ones counted once)."""
    parameters = list(model.parameters())
    return ParameterCount(
        trainable=sum(p.numel() for p in parameters if p.requires_grad),
        total=sum(p.numel() for p in parameters),
    )
