"""Gradient checkpointing of SAM ViT and TinyViT encoders: the same outputs, gradients and
BatchNorm statistics as without it, fewer activations kept, and the same parameter names."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from helpers import SIZE, tiny_sam
from torch import nn

from samnet.core.errors import SamnetError
from samnet.models.gradient_checkpointing import (
    checkpoint_encoder_blocks,
    encoder_blocks,
    is_checkpointed,
)
from samnet.models.network import SamSegmentationNetwork, build_network
from samnet.models.peft import PeftConfig, apply_peft
from samnet.models.tiny_vit import TinyViT

LORA = PeftConfig(
    method="lora",
    parts=("encoder", "decoder"),
    lora_rank=2,
    lora_alpha=2.0,
    lora_targets=("encoder_attention", "decoder_attention"),
    trainable_extra=("class_head", "input_adapter"),
)
# Every weight trains, TinyViT's BatchNorm layers included (they update their statistics).
FULL = PeftConfig(
    method="full",
    parts=("encoder", "decoder"),
    trainable_extra=("class_head", "input_adapter"),
)


def vit_pair() -> tuple[SamSegmentationNetwork, SamSegmentationNetwork]:
    """A toy SAM ViT network with LoRA, and its copy with a checkpointed encoder."""
    torch.manual_seed(0)
    plain = apply_peft(SamSegmentationNetwork(tiny_sam(), 1, 3, SIZE, "sam_rgb"), LORA)
    checkpointed = copy.deepcopy(plain)
    checkpoint_encoder_blocks(checkpointed.sam.image_encoder)
    return plain, checkpointed


def tiny_vit_pair() -> tuple[SamSegmentationNetwork, SamSegmentationNetwork]:
    """A toy TinyViT network (MBConv and attention blocks, BatchNorm), fully trained, and
    its copy with a checkpointed encoder."""
    torch.manual_seed(0)
    sam = tiny_sam()
    # Stride 2 x 2 x 2 (patch embedding, one merge): the 8 x 8 grid of tiny_sam's decoder.
    sam.image_encoder = TinyViT(
        SIZE,
        embed_dims=(8, 16, 16, 32),
        depths=(1, 2, 1, 1),
        num_heads=(2, 2, 2),
        window_sizes=(2, 2, 2),
        merge_strides=(2, 1, 1),
        out_chans=32,
    )
    plain = apply_peft(SamSegmentationNetwork(sam, 1, 3, SIZE, "unit_range"), FULL)
    checkpointed = copy.deepcopy(plain)
    checkpoint_encoder_blocks(checkpointed.sam.image_encoder)
    return plain, checkpointed


def train_step(network: SamSegmentationNetwork) -> torch.Tensor:
    """Image embeddings ``2 x D x h x w`` of a training forward pass through the input
    adapter and the encoder (all checkpointing changes), after backward of their sum of
    squares."""
    torch.manual_seed(1)
    size = network.input_adapter.image_size
    network.train()
    embeddings = network.encode(torch.randn(2, 1, size, size))
    (embeddings**2).sum().backward()
    return embeddings.detach()


@pytest.mark.parametrize("pair", [vit_pair, tiny_vit_pair], ids=["vit", "tiny_vit"])
def test_outputs_gradients_and_statistics_are_those_without_checkpointing(
    pair,
) -> None:
    plain, checkpointed = pair()
    assert all(map(is_checkpointed, encoder_blocks(checkpointed.sam.image_encoder)))
    assert not any(map(is_checkpointed, encoder_blocks(plain.sam.image_encoder)))
    torch.testing.assert_close(
        train_step(checkpointed), train_step(plain), rtol=0, atol=0
    )
    gradients = dict(plain.sam.image_encoder.named_parameters())
    assert any(p.grad is not None for p in gradients.values())
    for name, parameter in checkpointed.sam.image_encoder.named_parameters():
        expected = gradients[name].grad
        if expected is None:
            assert parameter.grad is None, name
        else:  # equal up to the order of float sums in the backward pass
            torch.testing.assert_close(parameter.grad, expected, rtol=1e-5, atol=1e-9)
    # Buffers: BatchNorm statistics updated once per step, as without checkpointing.
    for (name, ours), (_, theirs) in zip(
        checkpointed.named_buffers(), plain.named_buffers()
    ):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("pair", [vit_pair, tiny_vit_pair], ids=["vit", "tiny_vit"])
def test_checkpointed_blocks_recompute_in_training_and_keep_fewer_activations(
    pair,
) -> None:
    plain, checkpointed = pair()
    kept, runs = {}, {}
    for name, network in (("plain", plain), ("checkpointed", checkpointed)):
        blocks = encoder_blocks(network.sam.image_encoder)
        runs[name] = count_block_runs(blocks)
        kept[name] = [0]

        def pack(tensor: torch.Tensor, total: list[int] = kept[name]) -> torch.Tensor:
            total[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            train_step(network)
        # Each block runs once more in the backward pass when checkpointed.
        factor = 2 if name == "checkpointed" else 1
        assert runs[name][0] == factor * len(blocks)
    assert kept["checkpointed"][0] < 0.6 * kept["plain"][0]
    # In evaluation, and without autograd, blocks run once, as without checkpointing.
    runs["checkpointed"][0] = 0
    size = checkpointed.input_adapter.image_size
    with torch.no_grad():
        checkpointed.eval().encode(torch.randn(1, 1, size, size))
    assert runs["checkpointed"][0] == len(
        encoder_blocks(checkpointed.sam.image_encoder)
    )


def count_block_runs(blocks: list[nn.Module]) -> list[int]:
    """A counter of the blocks' runs, recomputations included: a recomputation calls a
    block's forward directly, so the count is of its first child's calls."""
    count = [0]

    def counted(*_) -> None:
        count[0] += 1

    for block in blocks:
        next(block.children()).register_forward_hook(counted)
    return count


def test_build_network_checkpoints_the_encoder_blocks_when_asked() -> None:
    for checkpointing in (False, True):
        network, _ = build_network(
            "lite_medsam",
            1,
            3,
            pretrained=False,
            gradient_checkpointing=checkpointing,
        )
        blocks = encoder_blocks(network.sam.image_encoder)
        assert len(blocks) == 12  # LiteMedSAM's 2 MBConv and 10 attention blocks
        assert [is_checkpointed(b) for b in blocks] == [checkpointing] * len(blocks)


def test_parameter_names_copies_and_pickles_are_unchanged() -> None:
    plain, checkpointed = vit_pair()
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    for copied in (
        copy.deepcopy(checkpointed),
        pickle.loads(pickle.dumps(checkpointed)),
    ):
        blocks = encoder_blocks(copied.sam.image_encoder)
        assert all(map(is_checkpointed, blocks))
        # The copy's blocks run their own weights, not the original's.
        assert all(block.forward.args[0] is block for block in blocks)


def test_an_unknown_encoder_is_refused() -> None:
    with pytest.raises(SamnetError, match="SAM ViT and TinyViT"):
        checkpoint_encoder_blocks(nn.Conv2d(3, 8, 3))
