"""One frozen encoder pass for all folds of a SAM model inside nnU-Net's predictor."""

from __future__ import annotations

import pytest
import torch
from helpers import SIZE, tiny_sam
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from samnet.models.network import SamSegmentationNetwork
from samnet.models.peft import PeftConfig, apply_peft
from samnet.models.shared_encoder import share_frozen_encoder

FOLDS = 3


def decoder_trained_network() -> SamSegmentationNetwork:
    network = SamSegmentationNetwork(tiny_sam(), 1, 3, SIZE, "unit_range")
    config = PeftConfig(
        method="full", parts=("decoder",), trainable_extra=("class_head",)
    )
    return apply_peft(network, config).eval()


def fold_states(network: SamSegmentationNetwork, trained: str) -> list[dict]:
    """Trained-only states that differ between folds in the parameters named ``trained``."""
    states = []
    for fold in range(FOLDS):
        state = network.trained_state_dict()
        for name in [n for n in network.state_dict() if n.startswith(trained)][:4]:
            generator = torch.Generator().manual_seed(fold)
            tensor = network.state_dict()[name]
            state[name] = tensor + 0.1 * torch.randn(tensor.shape, generator=generator)
        states.append(state)
    return states


def predictor_with(network: SamSegmentationNetwork, states: list[dict]):
    """nnU-Net's predictor holding ``states`` as its folds, with a sliding window of a
    single window, so that its fold loop is what the test exercises."""
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.network = network
    predictor.list_of_parameters = states
    predictor.predict_sliding_window_return_logits = lambda data: predictor.network(
        data
    )
    return predictor


def count_encoder_passes(network: SamSegmentationNetwork) -> list[int]:
    calls = [0]
    network.input_adapter.register_forward_hook(
        lambda *_: calls.__setitem__(0, calls[0] + 1)
    )
    return calls


@torch.inference_mode()
def test_folds_share_one_encoder_pass_and_give_nnunets_fold_mean() -> None:
    torch.manual_seed(0)
    network = decoder_trained_network()
    states = fold_states(network, "class_head.")
    x = torch.randn(2, 1, 40, 48)
    reference = predictor_with(network, states).predict_logits_from_preprocessed_data(x)

    predictor = predictor_with(network, states)
    calls = count_encoder_passes(network)
    assert share_frozen_encoder(predictor)
    shared = predictor.predict_logits_from_preprocessed_data(x)

    assert calls[0] == 1
    assert torch.allclose(shared, reference, atol=1e-5)
    folds = predictor.network.folds
    assert all(f.sam.image_encoder is network.sam.image_encoder for f in folds)
    assert not torch.equal(
        folds[0].class_head.class_tokens, folds[1].class_head.class_tokens
    )


@pytest.mark.parametrize(
    "case", ["encoder trained", "one fold", "full state", "not SAM"]
)
def test_folds_that_differ_before_the_embeddings_keep_nnunets_loop(case: str) -> None:
    network = decoder_trained_network()
    states = fold_states(network, "class_head.")
    if case == "encoder trained":
        states = fold_states(network, "sam.image_encoder.")
    elif case == "one fold":
        states = states[:1]
    elif case == "full state":
        states = [network.state_dict() for _ in range(FOLDS)]
    predictor = predictor_with(network, states)
    if case == "not SAM":
        predictor.network = torch.nn.Conv2d(1, 3, 1)
    before = (predictor.network, predictor.list_of_parameters)
    assert not share_frozen_encoder(predictor)
    assert (predictor.network, predictor.list_of_parameters) == before
