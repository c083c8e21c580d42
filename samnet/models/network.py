"""SAM as an nnU-Net network: ``B x C x H x W`` in, ``B x K x H x W`` class logits out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, Sam
from torch import nn

from samnet.core.errors import SamnetError
from samnet.models.backbones import BaseWeights, build_sam, get_backbone
from samnet.models.class_head import ClassHead
from samnet.models.fast_encoder import FastEncoder
from samnet.models.input_adapter import InputAdapter
from samnet.models.trained_checkpoint import trained_state
from samnet.prompting.simulated import ObjectPrompt

# The logit of a class nobody prompted on an image, in prompted mode: far below background's 0.
UNPROMPTED_LOGIT = -20.0
# State-dict key of the base weights' sha256 (32 bytes; empty for random weights): a
# trained-only state names the weights it must be loaded on top of.
BASE_SHA256_KEY = "base_weights_sha256"


@dataclass(frozen=True)
class CachedInput:
    """What ``forward`` takes while training from an embedding cache.

    Attributes:
      output_size: H x W of the logits (the cached windows' patch size).
      rest: the encoder part after the cached prefix (``B x ...`` prefix output ->
        ``B x D x h x w``), or None when the cache holds the image embeddings.
    """

    output_size: tuple[int, int]
    rest: nn.Module | None = None


class SamSegmentationNetwork(nn.Module):
    """Prompt-free multi-class SAM, usable wherever nnU-Net expects a network.

    ``forward`` = ``decode(encode(x))``; the split lets a frozen encoder's output be cached.
    ``forward_prompted`` runs SAM's own prompted path (boxes and/or points) for zero-shot
    use and as a baseline.

    Arguments:
      sam: a SAM model (image encoder, prompt encoder, mask decoder), e.g. from
        ``samnet.models.backbones.build_sam``.
      in_channels: C, the channels nnU-Net gives (1, 3, 4 MRI sequences, ...).
      num_classes: K, background included.
      image_size: the square side the backbone sees.
      normalization: what the backbone was pre-trained on (see ``InputAdapter``).
      base_weights: identity of the weights ``sam`` was loaded from; a trained-only state
        (``trained_state_dict``) carries its sha256 and loads only on the same weights.
      head: builds the prompt-free head from ``(sam.mask_decoder, num_classes)``:
        ``ClassHead`` (K learned class tokens), or ``PrototypeHead`` (tokens from the
        prototypes of a few labelled slices, ``samnet.fewshot``).

    ``state_dict``/``load_state_dict`` are nn.Module's, except that ``load_state_dict``
    also takes a trained-only state: nnU-Net's trainer and predictor then load small
    checkpoints into a network they built from the base weights and the plan's PEFT.
    """

    def __init__(
        self,
        sam: Sam,
        in_channels: int,
        num_classes: int,
        image_size: int,
        normalization: str,
        base_weights: BaseWeights | None = None,
        head: Callable[[MaskDecoder, int], nn.Module] = ClassHead,
    ) -> None:
        super().__init__()
        self.input_adapter = InputAdapter(in_channels, image_size, normalization)
        self.sam = sam
        self.class_head = head(sam.mask_decoder, num_classes)
        self.base_weights = base_weights
        self.cached_input: CachedInput | None = None
        # While set (one list per image of the batch), ``forward`` follows these prompts
        # (``decode_class_prompts``) instead of the prompt-free head: prompted training.
        self.class_prompts: list[list[ObjectPrompt]] | None = None
        # A FastEncoder copy of the frozen encoder for CPU inference and the fingerprint of
        # the weights it was made from; a tuple, so nn.Module does not register it (it is
        # not part of the state).
        self._inference_encoder: tuple[tuple, FastEncoder] | tuple[()] = ()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> image embeddings ``B x D x h x w``.

        A frozen encoder (and input adapter) runs without autograd: nothing upstream
        needs its gradient, and on a CPU it is most of the step's time and memory.
        """
        front = (self.input_adapter, self.sam.image_encoder)
        trains = any(p.requires_grad for part in front for p in part.parameters())
        if not (trains or self.training or torch.is_grad_enabled()) and x.is_cpu:
            return self.fast_inference_encoder()(self.input_adapter(x))
        with torch.set_grad_enabled(trains and torch.is_grad_enabled()):
            return self.sam.image_encoder(self.input_adapter(x))

    def fast_inference_encoder(self) -> FastEncoder:
        """The frozen encoder as a ``FastEncoder`` (eager): 1.9x (batch 1) and 1.8x
        (batch 8) faster per slice on CPU at 128 px, outputs within 1e-5 relative
        (benchmarks/encoder_speed.py, AMD EPYC).

        Made on first use and remade only when the encoder's weights changed: nnU-Net's
        predictor moves the network to its device once per case, which changes nothing
        on a CPU and must not cost a rebuild.
        """
        weights = self._encoder_weights()
        if not self._inference_encoder or not _same_weights(
            self._inference_encoder[0], weights
        ):
            fast = FastEncoder(self.sam.image_encoder, compile=False)
            self._inference_encoder = (weights, fast)
        return self._inference_encoder[1]

    def _encoder_weights(self) -> tuple[tuple[torch.Tensor, int, int], ...]:
        """Every encoder tensor with its storage address and version counter: a move, a
        cast or an in-place update (an optimizer step) changes one. Holding the tensors
        keeps their addresses from being reused by new ones. Inference tensors have no
        version counter; ``load_state_dict``, which may update them, drops the copy."""
        return tuple(
            (tensor, tensor.data_ptr(), 0 if tensor.is_inference() else tensor._version)
            for tensor in self.sam.image_encoder.state_dict(keep_vars=True).values()
        )

    def train(self, mode: bool = True) -> SamSegmentationNetwork:
        if mode:
            self._inference_encoder = ()
        return super().train(mode)

    def decode(
        self, image_embeddings: torch.Tensor, output_size: tuple[int, int]
    ) -> torch.Tensor:
        """Image embeddings ``B x D x h x w`` -> class logits ``B x K x H x W`` (``output_size``)."""
        logits = self.class_head(
            self.sam.mask_decoder,
            image_embeddings,
            self.embedding_positions(image_embeddings),
            self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1),
        )
        return F.interpolate(
            logits, size=output_size, mode="bilinear", align_corners=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``B x C x H x W`` -> logits ``B x K x H x W``; while ``cached_input`` is
        set, cached encoder outputs (see ``CachedInput``) -> logits of its output size;
        while ``class_prompts`` is set, by the prompted path (``decode_class_prompts``)."""
        if self.cached_input is None:
            embeddings, size = self.encode(x), tuple(x.shape[-2:])
        else:
            rest = self.cached_input.rest
            embeddings = x if rest is None else rest(x)
            size = self.cached_input.output_size
        if self.class_prompts is not None:
            return self.decode_class_prompts(embeddings, size, self.class_prompts)
        return self.decode(embeddings, size)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changed (``trained_state``, detached copies) plus the base sha256."""
        state = {
            name: tensor.detach().clone()
            for name, tensor in trained_state(self).items()
        }
        state[BASE_SHA256_KEY] = _sha256_tensor(self.base_weights)
        return state

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        """nn.Module's, or a ``trained_state_dict`` on top of the same base weights."""
        self._inference_encoder = ()
        if BASE_SHA256_KEY not in state_dict:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        state = dict(state_dict)
        saved = state.pop(BASE_SHA256_KEY)
        ours = _sha256_tensor(self.base_weights)
        if not torch.equal(saved.cpu(), ours):
            raise SamnetError(
                None,
                f"the checkpoint was trained on base weights with sha256 "
                f"{_hex(saved) or 'none (random)'}, this network was built from "
                f"{_hex(ours) or 'none (random)'}",
                "build the network from the weights it was trained on (the plan's "
                "sam.checkpoint), or retrain",
            )
        expected = set(trained_state(self))
        if strict and set(state) != expected:
            missing = sorted(expected - set(state))[:5]
            unexpected = sorted(set(state) - expected)[:5]
            raise SamnetError(
                None,
                f"the trained state does not fit this network (missing {missing}, "
                f"unexpected {unexpected})",
                "build and adapt the network with the plan it was trained with",
            )
        return super().load_state_dict(state, strict=False, assign=assign)

    def embedding_positions(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """SAM's dense positional encoding ``1 x D x h x w`` for any embedding grid size."""
        return self.sam.prompt_encoder.pe_layer(
            tuple(image_embeddings.shape[-2:])
        ).unsqueeze(0)

    def forward_prompted(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SAM's prompted path on one image: one mask per object, logits ``N x 1 x H x W``.

        Arguments:
          image: ``1 x C x H x W``.
          boxes: ``N x 4`` (x0, y0, x1, y1) in pixels of ``image``.
          points: ``N x P x 2`` (x, y) in pixels of ``image``; ``point_labels`` ``N x P``:
            1 inside the object, 0 outside.
        """
        return self.decode_prompted(
            self.encode(image), image.shape[-2:], boxes, points, point_labels
        )

    def decode_prompted(
        self,
        embeddings: torch.Tensor,
        size: tuple[int, int],
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``forward_prompted`` on an image already encoded: ``1 x D x h x w`` embeddings of
        an image of ``size`` (H, W), prompts as there; logits ``N x 1 x H x W``.

        Several prompt sets on one image share its encoding this way.
        """
        height, width = size
        scale_to = self.input_adapter.image_size
        scale = torch.tensor(
            [scale_to / width, scale_to / height], device=embeddings.device
        )
        sparse, dense = self.sam.prompt_encoder(
            points=None if points is None else (points * scale, point_labels),
            boxes=None if boxes is None else boxes * scale.repeat(2),
            masks=None,
        )
        masks, _ = self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.embedding_positions(embeddings),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return F.interpolate(
            masks, size=(height, width), mode="bilinear", align_corners=False
        )

    def decode_class_prompts(
        self,
        embeddings: torch.Tensor,
        size: tuple[int, int],
        prompts: list[list[ObjectPrompt]],
    ) -> torch.Tensor:
        """Class logits ``B x K x H x W`` from one prompted mask per object.

        ``embeddings`` ``B x D x h x w`` of images of ``size``; ``prompts[b]`` are image b's
        objects, at most one per class. A prompted class's channel is its mask logit,
        background's is 0 (so softmax and argmax see "object or not" per pixel), and a
        class without a prompt gets ``UNPROMPTED_LOGIT``: nothing is asked of it there.
        """
        logits = embeddings.new_full(
            (len(prompts), self.class_head.num_classes, *size), UNPROMPTED_LOGIT
        )
        logits[:, 0] = 0.0
        for index, objects in enumerate(prompts):
            for labels, tensors in prompt_groups(objects, embeddings.device):
                masks = self.decode_prompted(
                    embeddings[index : index + 1], size, **tensors
                )
                logits[index, labels] = masks[:, 0]
        return logits


def prompt_groups(
    objects: list[ObjectPrompt], device: torch.device
) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
    """One image's objects as ``decode_prompted`` takes them: the boxed ones together,
    the clicked ones together; each group with its objects' labels."""
    groups = []
    boxed = [o for o in objects if o.box is not None]
    if boxed:
        boxes = torch.tensor([o.box for o in boxed], device=device)
        groups.append(([o.label for o in boxed], {"boxes": boxes}))
    clicked = [o for o in objects if o.points is not None]
    if clicked:
        points = torch.tensor([o.points for o in clicked], device=device)
        labels = torch.tensor([o.point_labels for o in clicked], device=device)
        groups.append(
            ([o.label for o in clicked], {"points": points, "point_labels": labels})
        )
    return groups


def build_network(
    backbone: str,
    in_channels: int,
    num_classes: int,
    image_size: int | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    head: Callable[[MaskDecoder, int], nn.Module] = ClassHead,
) -> tuple[SamSegmentationNetwork, BaseWeights]:
    """A registered backbone as a prompt-free network, and the identity of its base weights.

    ``image_size`` defaults to the backbone's native input size; ``head`` is
    ``SamSegmentationNetwork``'s.
    """
    spec = get_backbone(backbone)
    size = image_size or spec.native_size
    sam, base = build_sam(
        backbone, checkpoint=checkpoint, image_size=size, pretrained=pretrained
    )
    return SamSegmentationNetwork(
        sam, in_channels, num_classes, size, spec.normalization, base, head
    ), base


def _sha256_tensor(base: BaseWeights | None) -> torch.Tensor:
    digest = base.sha256 if base is not None and base.sha256 else ""
    return torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8)


def _hex(digest: torch.Tensor) -> str:
    return bytes(digest.tolist()).hex()


def _same_weights(made_from: tuple, now: tuple) -> bool:
    """Whether two ``_encoder_weights`` are of the same tensors, unmoved and unchanged."""
    return len(made_from) == len(now) and all(
        old is new and old_address == address and old_version == version
        for (old, old_address, old_version), (new, address, version) in zip(
            made_from, now
        )
    )
