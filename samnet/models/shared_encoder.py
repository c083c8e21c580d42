"""One frozen encoder for all the folds of a SAM model at prediction time.

nnU-Net's predictor averages a model's folds by loading each fold's weights and running
the whole network again. A SAM trained with a frozen encoder (decoder-only PEFT, cached
embeddings) has the same encoder in every fold, and the encoder is nearly all of the
cost. Running it once per window and every fold's decoder on its output gives the same
mean logits, since nnU-Net's sliding window and mirroring average linearly, K times faster.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from samnet.models.network import BASE_SHA256_KEY, SamSegmentationNetwork
from samnet.models.object_prompt import ObjectPrompt

# For the annotation only: importing nnU-Net's predictor takes seconds.
if TYPE_CHECKING:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

# State-dict prefixes of what runs before the image embeddings.
ENCODER_PARTS = ("input_adapter.", "sam.image_encoder.")


class FoldMeanNetwork(nn.Module):
    """The mean logits of fold networks that share one input adapter and image encoder.

    Arguments:
      folds: SAM networks, one per fold, whose ``input_adapter`` and
        ``sam.image_encoder`` are the same modules (see ``fold_mean_network``).
    """

    def __init__(self, folds: Sequence[SamSegmentationNetwork]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(folds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``B x C x H x W`` -> the folds' mean logits ``B x K x H x W``."""
        embeddings = self.encode(x)
        size = tuple(x.shape[-2:])
        logits = [fold.decode(embeddings, size, images=x) for fold in self.folds]
        return torch.stack(logits).mean(dim=0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The shared encoder: ``B x C x H x W`` -> embeddings ``B x D x h x w``."""
        return self.folds[0].encode(x)

    def decode_class_prompts(
        self,
        embeddings: torch.Tensor,
        size: tuple[int, int],
        prompts: list[list[ObjectPrompt]],
    ) -> torch.Tensor:
        """The folds' mean of ``SamSegmentationNetwork.decode_class_prompts``: embeddings
        ``B x D x h x w`` of images of ``size``, ``prompts[b]`` image b's objects ->
        class logits ``B x K x H x W``."""
        logits = [f.decode_class_prompts(embeddings, size, prompts) for f in self.folds]
        return torch.stack(logits).mean(dim=0)


def encoder_is_shared(states: Sequence[Mapping[str, torch.Tensor]]) -> bool:
    """Whether every fold state is trained-only and leaves the encoder as it was."""
    return all(
        BASE_SHA256_KEY in state
        and not any(key.startswith(ENCODER_PARTS) for key in state)
        for state in states
    )


def fold_mean_network(
    network: SamSegmentationNetwork, states: Sequence[Mapping[str, torch.Tensor]]
) -> FoldMeanNetwork:
    """Copies of ``network`` with each fold's trained state, all on ``network``'s encoder.

    Only the decoder side is copied: the deep copy is told that the input adapter and the
    image encoder are themselves, so the folds hold references to one set of weights.
    """
    shared = (network.input_adapter, network.sam.image_encoder)
    folds = []
    for state in states:
        fold = copy.deepcopy(network, {id(module): module for module in shared})
        fold.load_state_dict(state)
        folds.append(fold)
    return FoldMeanNetwork(folds)


def share_frozen_encoder(predictor: nnUNetPredictor) -> bool:
    """Give an initialised ``nnUNetPredictor`` of a frozen-encoder SAM one pass for all folds.

    Its network becomes a ``FoldMeanNetwork`` and its parameter list that network's one
    state, so nnU-Net's fold loop runs once. Returns False, changing nothing, for other
    networks, a single fold, or folds that trained the encoder.
    """
    states = predictor.list_of_parameters
    network = predictor.network
    if not isinstance(network, SamSegmentationNetwork) or len(states) < 2:
        return False
    if not encoder_is_shared(states):
        return False
    predictor.network = fold_mean_network(network, states)
    predictor.list_of_parameters = [predictor.network.state_dict()]
    return True
