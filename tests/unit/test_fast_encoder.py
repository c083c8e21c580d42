"""The fast inference encoder changes speed, never outputs."""

from __future__ import annotations

import copy
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samnet.models.backbones import build_sam
from samnet.models.fast_encoder import FastEncoder, fold_batch_norms
from samnet.models.fused_attention import (
    FusedWindowAttention,
    fuse_window_attention,
)
from samnet.models.fused_convolutions import (
    ConvPointwise,
    fuse_convolution_activations,
)
from samnet.models.fused_linears import (
    FusedMlp,
    LinearPointwise,
    fuse_linear_activations,
)
from samnet.models.lora import LoRALinear
from samnet.models.tiny_vit import (
    Conv2dBN,
    MBConv,
    Mlp,
    PatchEmbed,
    PatchMerging,
    WindowAttention,
)


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return ((result - reference).abs().max() / reference.abs().max()).item()


@pytest.fixture(scope="module")
def lite_medsam_encoder() -> torch.nn.Module:
    sam, _ = build_sam("lite_medsam", image_size=64)
    return sam.image_encoder.eval()


def test_folding_leaves_no_batch_norm(lite_medsam_encoder) -> None:
    folded = fold_batch_norms(FastEncoder(lite_medsam_encoder, compile=False).encoder)
    assert not any(
        isinstance(m, (Conv2dBN, torch.nn.BatchNorm2d)) for m in folded.modules()
    )
    assert any(isinstance(m, Conv2dBN) for m in lite_medsam_encoder.modules()), (
        "the original is untouched"
    )


@pytest.mark.parametrize("compile", [False, True])
def test_fast_encoder_matches_the_encoder(lite_medsam_encoder, compile: bool) -> None:
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        reference = lite_medsam_encoder(x)
    fast = FastEncoder(lite_medsam_encoder, compile=compile)
    result = fast(x)
    assert result.shape == reference.shape == (3, 256, 16, 16)
    assert relative_error(result, reference) < 1e-4
    assert not any(p.requires_grad for p in fast.parameters())


def randomize_batch_norms(module: torch.nn.Module) -> None:
    """Random statistics, and no zero-initialised scale hiding a branch."""
    torch.manual_seed(0)
    for child in module.modules():
        if isinstance(child, torch.nn.BatchNorm2d):
            child.running_mean.normal_(0, 0.1)
            child.running_var.uniform_(0.5, 1.5)
            child.weight.data.uniform_(0.5, 1.5)


@pytest.mark.parametrize("backbone", ["lite_medsam", "mobile_sam"])
def test_fused_convolutions_keep_the_outputs(backbone: str) -> None:
    """LiteMedSAM's 1 x 1 and MobileSAM's strided 3 x 3 patch embedding, every MBConv and
    PatchMerging run as oneDNN convolutions with their GELU, with the encoder's outputs."""
    sam, _ = build_sam(backbone, image_size=64, pretrained=backbone == "lite_medsam")
    encoder = sam.image_encoder.eval()
    randomize_batch_norms(encoder)
    fused = fuse_convolution_activations(fold_batch_norms(copy.deepcopy(encoder)))
    assert not any(
        isinstance(m, (MBConv, PatchMerging, PatchEmbed)) for m in fused.modules()
    )
    activations = [
        m.activation for m in fused.modules() if isinstance(m, ConvPointwise)
    ]
    assert activations.count("gelu") > activations.count("none") > 0
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert relative_error(fused(x), encoder(x)) < 1e-4


def test_fast_encoder_fuses_only_float32_cpu_weights(lite_medsam_encoder) -> None:
    def fused_layers(encoder: torch.nn.Module, kind: type) -> int:
        modules = FastEncoder(encoder, compile=False).encoder.modules()
        return sum(isinstance(m, kind) for m in modules)

    for kind in (ConvPointwise, LinearPointwise):
        assert fused_layers(lite_medsam_encoder, kind) > 0
        assert fused_layers(copy.deepcopy(lite_medsam_encoder).double(), kind) == 0


def test_fused_linears_keep_the_outputs(lite_medsam_encoder) -> None:
    """Every linear layer runs on oneDNN, each MLP's GELU inside its first layer."""
    encoder = copy.deepcopy(lite_medsam_encoder)
    mlps = sum(isinstance(m, Mlp) for m in encoder.modules())
    fused = fuse_linear_activations(copy.deepcopy(encoder))
    assert not any(type(m) in (torch.nn.Linear, Mlp) for m in fused.modules())
    assert sum(isinstance(m, FusedMlp) for m in fused.modules()) == mlps > 0
    activations = [
        m.activation for m in fused.modules() if isinstance(m, LinearPointwise)
    ]
    assert activations.count("gelu") == mlps
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert relative_error(fused(x), encoder(x)) < 1e-4


def test_fused_linears_keep_lora_updates(lite_medsam_encoder) -> None:
    """A LoRA-wrapped layer keeps its update; its MLP keeps a separate GELU."""
    encoder = copy.deepcopy(lite_medsam_encoder)
    mlp = next(m for m in encoder.modules() if isinstance(m, Mlp))
    mlp.fc1 = LoRALinear(mlp.fc1, rank=4, alpha=8.0, dropout=0.0)
    torch.nn.init.normal_(mlp.fc1.lora_b.weight)
    fused = fuse_linear_activations(copy.deepcopy(encoder))
    wrapped = [m for m in fused.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 1
    assert isinstance(wrapped[0].lora_b, LinearPointwise)
    assert sum(type(m) is Mlp for m in fused.modules()) == 1
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        unadapted = lite_medsam_encoder(x)
        reference = encoder(x)
        assert relative_error(reference, unadapted) > 1e-3, "the update shows"
        assert relative_error(fused(x), reference) < 1e-4


def test_fused_window_attention_keeps_the_outputs(lite_medsam_encoder) -> None:
    """One attention call with the relative-position bias as mask, as written out."""
    encoder = copy.deepcopy(lite_medsam_encoder)
    torch.manual_seed(0)
    attentions = [m for m in encoder.modules() if isinstance(m, WindowAttention)]
    for attention in attentions:
        attention.attention_biases.data.normal_()
    fused = fuse_window_attention(copy.deepcopy(encoder))
    assert not any(isinstance(m, WindowAttention) for m in fused.modules())
    replaced = [m for m in fused.modules() if isinstance(m, FusedWindowAttention)]
    assert len(replaced) == len(attentions) > 0
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        reference = encoder(x)
        assert relative_error(reference, lite_medsam_encoder(x)) > 1e-3, "bias shows"
        assert relative_error(fused(x), reference) < 1e-4


FAULTS_PER_CALL = """
import resource, sys
import torch
from samnet.models.heap import keep_freed_memory

if sys.argv[1] == "keep":
    assert keep_freed_memory()
# LiteMedSAM's first MBConv widening at 256 px: a 64 MB output, above the largest
# threshold under which glibc serves blocks from its heap by default.
x = torch.rand(1, 64, 256, 256)
weight, bias = torch.randn(256, 64, 1, 1), torch.zeros(256)
geometry = ([0, 0], [1, 1], [1, 1], 1, "none", [], "none")


def widen():
    torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry)


widen()
widen()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
widen()
widen()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 2)
"""


def page_faults_per_call(mode: str) -> float:
    """Page faults of a warm oneDNN convolution with a 64 MB output, in a fresh process."""
    run = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CALL, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(run.stdout.split()[-1])


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not torch.backends.mkldnn.is_available(),
    reason="glibc's malloc and oneDNN only",
)
def test_kept_memory_is_not_faulted_in_again() -> None:
    assert page_faults_per_call("keep") < 100
    if (
        Path("/sys/kernel/mm/transparent_hugepage/enabled")
        .read_text()
        .startswith("[always]")
    ):
        return  # 2 MB pages: too few faults by default to tell the two apart
    assert page_faults_per_call("default") > 10_000
