"""The fast inference encoder changes speed, never outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from samnet.models.backbones import build_sam
from samnet.models.fast_encoder import FastEncoder, fold_batch_norms
from samnet.models.fused_convolutions import ConvPointwise, fuse_convolution_activations
from samnet.models.tiny_vit import Conv2dBN, MBConv, PatchEmbed, PatchMerging


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


@pytest.mark.parametrize("backbone", ["lite_medsam", "mobile_sam"])
def test_fused_convolutions_keep_the_outputs(backbone: str) -> None:
    """LiteMedSAM's 1 x 1 and MobileSAM's strided 3 x 3 patch embedding, every MBConv and
    PatchMerging run as oneDNN convolutions with their GELU, with the encoder's outputs."""
    sam, _ = build_sam(backbone, image_size=64, pretrained=backbone == "lite_medsam")
    encoder = sam.image_encoder.eval()
    torch.manual_seed(0)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            # Random statistics, and no zero-initialised scale hiding a branch.
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
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
    def fused_convolutions(encoder: torch.nn.Module) -> int:
        modules = FastEncoder(encoder, compile=False).encoder.modules()
        return sum(isinstance(m, ConvPointwise) for m in modules)

    assert fused_convolutions(lite_medsam_encoder) > 0
    assert fused_convolutions(copy.deepcopy(lite_medsam_encoder).double()) == 0
