"""SAM's mask decoder queried with prototypes of a few labelled slices (Xie et al., WACV 2024)."""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder
from torch import nn

from samnet.core.errors import SamnetError
from samnet.models.class_head import mask_logits, run_mask_decoder


class PromptProjection(nn.Module):
    """Prototype (an image-embedding vector) -> offset of a decoder token.

    LayerNorm, then a two-layer MLP whose last layer starts at zero: at step 0 every
    token is SAM's pre-trained mask token, and training learns how prototypes steer it.
    """

    def __init__(self, embedding_dim: int, token_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embedding_dim)
        self.hidden = nn.Linear(embedding_dim, token_dim)
        self.activation = nn.GELU()
        self.out = nn.Linear(token_dim, token_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, prototypes: torch.Tensor) -> torch.Tensor:
        """``... x D`` prototypes -> ``... x T`` token offsets."""
        return self.out(self.activation(self.hidden(self.norm(prototypes))))


class PrototypeHead(nn.Module):
    """K tokens computed from class prototypes, run through a pre-trained SAM mask decoder.

    The sibling of ``ClassHead`` with the same call signature: token k is SAM's first mask
    token plus ``prompt_projection(prototype_k)``, where prototype_k is the frozen
    encoder's mean embedding over class k (background included) in a few labelled support
    slices (``samnet.fewshot.prototypes``), plus a learned embedding of class k. All
    tokens share the decoder's first hypernetwork MLP (borrowed, so it trains with the
    decoder): the decoder learns to query the image embedding with embeddings of
    annotated regions, with no clicks or boxes. The prototype says what a class looks
    like; the class embedding says which of the dataset's labels it is, which structures
    of alike appearance need (two touching parts of one organ, as the anterior and
    posterior hippocampus). Both start at zero: at step 0 every token is SAM's mask token.

    Prototypes come from ``support_prototypes`` (a buffer set by ``set_support`` and saved
    in the trained state, so inference needs no prompts), or are given per image to
    ``forward`` (training episodes, where each query gets prototypes that do not contain
    its own labels).
    """

    def __init__(self, decoder: MaskDecoder, num_classes: int) -> None:
        super().__init__()
        dim = decoder.transformer_dim
        self.num_classes = num_classes
        self.mask_token = nn.Parameter(decoder.mask_tokens.weight[:1].detach().clone())
        self.class_embeddings = nn.Parameter(torch.zeros(num_classes, dim))
        self.prompt_projection = PromptProjection(dim, dim)
        self.register_buffer("support_prototypes", torch.zeros(num_classes, dim))
        # How many support slices the stored prototypes were pooled from (0: none yet).
        self.register_buffer("support_slices", torch.zeros((), dtype=torch.long))

    def set_support(self, prototypes: torch.Tensor, slices: int) -> None:
        """Store the ``K x D`` prototypes of ``slices`` support slices for inference."""
        if prototypes.shape != self.support_prototypes.shape:
            raise ValueError(
                f"prototypes of shape {tuple(prototypes.shape)}, expected "
                f"{tuple(self.support_prototypes.shape)}"
            )
        self.support_prototypes.copy_(prototypes)
        self.support_slices.fill_(slices)

    def prototypes(
        self, batch: int, episode: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``B x K x D``: ``episode``'s (checked), or the stored support prototypes for
        every image."""
        if episode is not None:
            if episode.shape[:2] != (batch, self.num_classes):
                raise ValueError(
                    f"episode prototypes of shape {tuple(episode.shape)} for "
                    f"{batch} images and {self.num_classes} classes"
                )
            return episode
        if int(self.support_slices) == 0:
            raise SamnetError(
                None,
                "this few-shot network holds no support prototypes",
                "train it with nnUNetTrainerSAMFewShot (or call set_support), or load "
                "the checkpoint it was trained into",
            )
        return self.support_prototypes.unsqueeze(0).expand(batch, -1, -1)

    def forward(
        self,
        decoder: MaskDecoder,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        dense_embedding: torch.Tensor,
        prototypes: torch.Tensor | None = None,
        fine_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits at 4x the embedding resolution, or at the image's.

        Arguments:
          decoder: the SAM mask decoder whose transformer, upscaling and first
            hypernetwork MLP are used.
          image_embeddings: ``B x D x h x w`` from the image encoder.
          image_pe: ``1 x D x h x w`` positional encoding of the embedding grid.
          dense_embedding: ``1 x D x 1 x 1`` SAM's "no mask" dense prompt embedding.
          prototypes: ``B x K x D``, image b queried with ``prototypes[b]`` (a training
            episode); None: the stored support prototypes for every image.
          fine_features: ``B x D/8 x H x W`` of an image branch, as ``ClassHead``'s.

        Returns:
          ``B x K x 4h x 4w`` logits, one map per prototype (class); ``B x K x H x W``
          with ``fine_features``.
        """
        prototypes = self.prototypes(len(image_embeddings), prototypes)
        tokens = (
            self.mask_token + self.class_embeddings + self.prompt_projection(prototypes)
        )
        token_outputs, upscaled = run_mask_decoder(
            decoder, tokens, image_embeddings, image_pe, dense_embedding
        )
        weights = decoder.output_hypernetworks_mlps[0](token_outputs)
        return mask_logits(weights, upscaled, fine_features)
