"""SAM as an nnU-Net network: ``B x C x H x W`` in, ``B x K x H x W`` class logits out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, Sam
from torch import nn

from samnet.core.errors import SamnetError
from samnet.models.backbones import BaseWeights, build_sam, get_backbone
from samnet.models.class_head import ClassHead
from samnet.models.encoder_prefix import split_image_encoder
from samnet.models.fast_encoder import FastEncoder
from samnet.models.gradient_checkpointing import checkpoint_encoder_blocks
from samnet.models.image_branch import ImageBranch
from samnet.models.input_adapter import InputAdapter
from samnet.models.object_prompt import ObjectPrompt, prompt_groups
from samnet.models.trained_checkpoint import trained_state

# The logit of a class nobody prompted on an image (``decode_class_prompts``): far below
# background's 0.
UNPROMPTED_LOGIT = -20.0
# State-dict key of the base weights' sha256 (32 bytes; empty for random weights): a
# trained-only state names the weights it must be loaded on top of.
BASE_SHA256_KEY = "base_weights_sha256"


@dataclass(frozen=True)
class EncodedImages:
    """Images whose frozen encoder output is already computed: what ``forward`` takes,
    instead of images, in the batches of cached, few-shot and prompted training.

    The batch says what to decode, so the network holds no mode: the same network
    (and its DDP or torch.compile wrapper) decodes images, cached features and prompted
    batches, whichever it is given.

    Attributes:
      features: ``B x D x h x w`` image embeddings (the embedding cache, a few-shot
        support set); with ``prefix_stages`` k, the output of the image encoder's first
        k stages instead (``split_image_encoder``'s prefix: ``B x C' x h' x w'`` for
        TinyViT, ``B x h x w x C'`` for SAM's ViT), which the network's remaining stages
        turn into embeddings.
      output_size: H x W of the logits: the size of the images that were encoded.
      prefix_stages: see ``features``; None when they are the image embeddings.
      prompts: image b's objects, at most one per class, in ``prompts[b]``: the logits
        follow them (``decode_class_prompts``). None: the prompt-free head.
      prototypes: ``B x K x D`` class prototypes, image b queried with
        ``prototypes[b]`` (a ``PrototypeHead``'s training episodes). None: the head's
        own (stored support prototypes, or learned class tokens).
      images: ``B x C x H x W``, the network inputs that were encoded (the windows as
        nnU-Net gives them): what a network with an image branch reads besides the
        features. None: the batch has none (a network without a branch needs none).
    """

    features: torch.Tensor
    output_size: tuple[int, int]
    prefix_stages: int | None = None
    prompts: list[list[ObjectPrompt]] | None = None
    prototypes: torch.Tensor | None = None
    images: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.prompts is not None and self.prototypes is not None:
            raise ValueError(
                "prompted decoding (prompts) and prototype queries (prototypes) are "
                "two heads: give one of them"
            )

    def to(self, device: torch.device, non_blocking: bool = False) -> EncodedImages:
        """The same batch with its tensors on ``device``: nnU-Net's train and validation
        steps move a batch's ``data`` this way."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            if tensor is None:
                return None
            return tensor.to(device, non_blocking=non_blocking)

        return replace(
            self,
            features=move(self.features),
            prototypes=move(self.prototypes),
            images=move(self.images),
        )


class SamSegmentationNetwork(nn.Module):
    """Prompt-free multi-class SAM, usable wherever nnU-Net expects a network.

    ``forward(images)`` = ``decode(encode(images), ...)``, the prompt-free path nnU-Net's
    predictor and validation call; the split lets a frozen encoder's output be cached, and
    ``forward(EncodedImages(...))`` decodes such cached features (``decode_encoded``), with
    the images too for a network with an image branch.
    ``forward_prompted`` runs SAM's own prompted path (boxes and/or points) for zero-shot
    use and as a baseline; ``decode_class_prompts`` turns one prompt per class into class
    logits (prompted training).

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
      image_branch: the prompt-free head also reads the input image at its full
        resolution (``ImageBranch``, starting at zero), and its logits are at that
        resolution; ``decode`` then needs the images besides their embeddings. SAM's
        prompted path (``decode_prompted``, ``decode_class_prompts``) does not use it.

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
        image_branch: bool = False,
    ) -> None:
        super().__init__()
        self.input_adapter = InputAdapter(in_channels, image_size, normalization)
        self.sam = sam
        self.class_head = head(sam.mask_decoder, num_classes)
        self.image_branch = (
            ImageBranch(in_channels, sam.mask_decoder.transformer_dim // 8)
            if image_branch
            else None
        )
        self.base_weights = base_weights
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
        self,
        image_embeddings: torch.Tensor,
        output_size: tuple[int, int],
        prototypes: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image embeddings ``B x D x h x w`` -> class logits ``B x K x H x W`` (``output_size``).

        ``prototypes`` ``B x K x D``: a ``PrototypeHead`` queries image b with
        ``prototypes[b]`` instead of its stored support prototypes (see ``EncodedImages``).
        ``images`` ``B x C x H x W``: the network inputs that were encoded, which the
        image branch reads; required when the network has one.
        """
        head_inputs = (
            self.sam.mask_decoder,
            image_embeddings,
            self.embedding_positions(image_embeddings),
            self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1),
        )
        fine_features = self.fine_features(images)
        if prototypes is None:
            logits = self.class_head(*head_inputs, fine_features=fine_features)
        else:
            logits = self.class_head(
                *head_inputs, prototypes=prototypes, fine_features=fine_features
            )
        return F.interpolate(
            logits, size=output_size, mode="bilinear", align_corners=False
        )

    def fine_features(self, images: torch.Tensor | None) -> torch.Tensor | None:
        """The image branch's features ``B x D/8 x H x W`` of ``images`` ``B x C x H x W``;
        None for a network without one."""
        if self.image_branch is None:
            return None
        if images is None:
            raise SamnetError(
                None,
                "this network has an image branch (the plan's image_branch), which "
                "reads the images, but it was given only their encoder output",
                "give EncodedImages with images (the embedding cache stores them when "
                "the plan's image_branch is on); few-shot and prompted training do "
                "not: re-plan them without --image-branch",
            )
        return self.image_branch(images)

    def forward(self, x: torch.Tensor | EncodedImages) -> torch.Tensor:
        """Class logits ``B x K x H x W``.

        Images ``B x C x H x W`` go through the encoder and the prompt-free head (what
        nnU-Net's predictor and validation call); ``EncodedImages`` go to
        ``decode_encoded``: the batches of the cached, few-shot and prompted trainers,
        which nnU-Net's training and validation steps pass here as they pass images.
        """
        if isinstance(x, EncodedImages):
            return self.decode_encoded(x)
        return self.decode(self.encode(x), tuple(x.shape[-2:]), images=x)

    def decode_encoded(self, encoded: EncodedImages) -> torch.Tensor:
        """Class logits ``B x K x H x W`` (H x W ``encoded.output_size``) of images whose
        encoder output (or its frozen prefix's) is given: the encoder's remaining stages
        run first, then the prompted path or the head, as ``encoded`` says."""
        embeddings = encoded.features
        if encoded.prefix_stages is not None:
            _, rest = split_image_encoder(self.sam.image_encoder, encoded.prefix_stages)
            embeddings = rest(embeddings)
        if encoded.prompts is not None:
            return self.decode_class_prompts(
                embeddings, encoded.output_size, encoded.prompts
            )
        return self.decode(
            embeddings, encoded.output_size, encoded.prototypes, encoded.images
        )

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


def build_network(
    backbone: str,
    in_channels: int,
    num_classes: int,
    image_size: int | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    head: Callable[[MaskDecoder, int], nn.Module] = ClassHead,
    gradient_checkpointing: bool = False,
    image_branch: bool = False,
) -> tuple[SamSegmentationNetwork, BaseWeights]:
    """A registered backbone as a prompt-free network, and the identity of its base weights.

    ``image_size`` defaults to the backbone's native input size; ``head`` and
    ``image_branch`` are ``SamSegmentationNetwork``'s. ``gradient_checkpointing`` (the plan's): the image
    encoder's blocks recompute their activations in the backward pass of training
    (``samnet.models.gradient_checkpointing``); evaluation and prediction are unchanged.
    """
    spec = get_backbone(backbone)
    size = image_size or spec.native_size
    sam, base = build_sam(
        backbone, checkpoint=checkpoint, image_size=size, pretrained=pretrained
    )
    if gradient_checkpointing:
        checkpoint_encoder_blocks(sam.image_encoder)
    return SamSegmentationNetwork(
        sam,
        in_channels,
        num_classes,
        size,
        spec.normalization,
        base,
        head,
        image_branch,
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
