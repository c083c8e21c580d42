"""The one device -> precision decision of the embedding cache build and pre-training."""

from __future__ import annotations

import pytest
import torch

from samnet.core.precision import Precision, precision_for


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_cuda_computes_under_float16_autocast(device) -> None:
    precision = precision_for(device)
    assert precision == Precision("cuda", torch.float16)
    assert precision.enabled and precision.compute_dtype == "float16"


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "meta"])
def test_other_devices_compute_in_float32_as_before(device) -> None:
    precision = precision_for(device)
    assert precision.autocast_dtype is None
    assert not precision.enabled and precision.compute_dtype == "float32"
    assert not precision.grad_scaler().is_enabled()


def test_disabled_autocast_is_float32_even_inside_another_autocast() -> None:
    a, b = torch.rand(4, 4), torch.rand(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
        with precision_for("cpu").autocast():
            assert (a @ b).dtype == torch.float32


def test_an_enabled_precision_autocasts_and_scales_float16_only() -> None:
    """CUDA's code path, on a CPU: the dtype reaches autocast, and loss scaling is on for
    float16 gradients (which underflow without it) and off for bfloat16."""
    a, b = torch.rand(4, 4), torch.rand(4, 4)
    with Precision("cpu", torch.bfloat16).autocast():
        assert (a @ b).dtype == torch.bfloat16
    assert not Precision("cpu", torch.bfloat16).grad_scaler().is_enabled()
    assert Precision("cpu", torch.float16).grad_scaler().is_enabled()
