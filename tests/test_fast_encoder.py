"""The fast inference encoder changes speed, never outputs."""

from __future__ import annotations

import pytest
import torch

from samnet.models.backbones import build_sam
from samnet.models.fast_encoder import FastEncoder, fold_batch_norms
from samnet.models.tiny_vit import Conv2dBN


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
