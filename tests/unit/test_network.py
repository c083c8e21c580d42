"""The prompt-free multi-class SAM network and its prompted path, on tiny random SAMs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from helpers import SIZE, tiny_sam

from samnet.models.backbones import BACKBONES
from samnet.models.input_adapter import SAM_PIXEL_MEAN, SAM_PIXEL_STD, InputAdapter
from samnet.models.network import EncodedImages, SamSegmentationNetwork, build_network
from samnet.models.object_prompt import ObjectPrompt
from samnet.models.peft import PeftConfig, apply_peft
from samnet.models.trained_checkpoint import save_trained


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("classes", [2, 3, 8])
def test_any_channels_and_classes_give_logits_of_the_input_size(
    channels: int, classes: int
) -> None:
    network = SamSegmentationNetwork(tiny_sam(), channels, classes, SIZE, "sam_rgb")
    logits = network(torch.randn(2, channels, 40, 56))
    assert logits.shape == (2, classes, 40, 56)
    assert torch.isfinite(logits).all()


def test_forward_is_decode_of_encode() -> None:
    network = SamSegmentationNetwork(tiny_sam(), 1, 3, SIZE, "unit_range").eval()
    x = torch.randn(2, 1, 48, 48)
    embeddings = network.encode(x)
    assert embeddings.shape == (2, 32, SIZE // 8, SIZE // 8)
    assert torch.equal(network.decode(embeddings, (48, 48)), network(x))


def test_encoded_images_are_decoded_as_they_say() -> None:
    """``forward`` on ``EncodedImages``: the head, or the prompted path when they carry
    prompts; nnU-Net moves them as it moves an image batch."""
    network = SamSegmentationNetwork(tiny_sam(), 1, 3, SIZE, "unit_range").eval()
    x = torch.randn(2, 1, 48, 48)
    embeddings = network.encode(x)
    encoded = EncodedImages(embeddings, (48, 48)).to(torch.device("cpu"))
    assert torch.equal(network(encoded), network(x))
    prompts = [[ObjectPrompt(2, box=[4.0, 4.0, 20.0, 20.0])], []]
    prompted = EncodedImages(embeddings, (48, 48), prompts=prompts)
    assert torch.equal(
        network(prompted), network.decode_class_prompts(embeddings, (48, 48), prompts)
    )
    with pytest.raises(ValueError, match="give one of them"):
        EncodedImages(
            embeddings, (48, 48), prompts=prompts, prototypes=torch.zeros(2, 3)
        )


def test_each_class_gets_its_own_logits_and_gradients() -> None:
    network = SamSegmentationNetwork(tiny_sam(), 1, 3, SIZE, "unit_range")
    logits = network(torch.randn(1, 1, 32, 32))
    assert not torch.allclose(logits[:, 0], logits[:, 1])
    logits[:, 2].mean().backward()
    token_gradient = network.class_head.class_tokens.grad
    assert token_gradient[2].abs().sum() > 0
    assert network.class_head.class_mlps[2].layers[0].weight.grad.abs().sum() > 0
    assert network.class_head.class_mlps[0].layers[0].weight.grad.abs().sum() == 0


def test_input_adapter_channels() -> None:
    x = torch.randn(2, 1, 20, 30)
    assert list(InputAdapter(1, 16, "unit_range").parameters()) == []
    assert list(InputAdapter(3, 16, "unit_range").parameters()) == []
    repeated = InputAdapter(1, 16, "unit_range")(x)
    assert repeated.shape == (2, 3, 16, 16)
    assert torch.equal(repeated[:, 0], repeated[:, 2])
    mixed = InputAdapter(4, 16, "unit_range")
    assert mixed.channel_mix.weight.shape == (3, 4, 1, 1)
    same_channels = torch.randn(1, 1, 20, 30).expand(-1, 4, -1, -1)
    assert torch.allclose(
        mixed(same_channels),
        InputAdapter(1, 16, "unit_range")(same_channels[:, :1]),
        atol=1e-6,
    )


def test_input_adapter_intensity_mappings() -> None:
    x = torch.randn(2, 3, 32, 32) * 5 + 3
    unit = InputAdapter(3, 32, "unit_range")(x)
    assert unit.min() == 0.0 and unit.max() == 1.0
    sam = InputAdapter(3, 32, "sam_rgb")(x)
    mean = torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1)
    assert torch.allclose(sam, (unit * 255 - mean) / std, atol=1e-4)
    # One outlier voxel must not squash the contrast of the rest (percentile clipping).
    spiky = x.clone()
    spiky[0, 0, 0, 0] = 1e6
    assert torch.allclose(
        InputAdapter(3, 32, "unit_range")(spiky)[0, :, 5:, 5:],
        unit[0, :, 5:, 5:],
        atol=0.05,
    )


def test_unknown_normalization_is_refused() -> None:
    with pytest.raises(ValueError, match="normalization"):
        InputAdapter(1, 16, "imagenet")


def test_prompted_path_gives_one_mask_per_object() -> None:
    network = SamSegmentationNetwork(tiny_sam(), 1, 2, SIZE, "unit_range").eval()
    image = torch.randn(1, 1, 40, 56)
    boxes = torch.tensor([[5.0, 5.0, 20.0, 30.0], [10.0, 10.0, 50.0, 35.0]])
    assert network.forward_prompted(image, boxes=boxes).shape == (2, 1, 40, 56)
    points = torch.tensor([[[10.0, 10.0], [30.0, 30.0]]])
    labels = torch.tensor([[1.0, 0.0]])
    assert network.forward_prompted(
        image, points=points, point_labels=labels
    ).shape == (1, 1, 40, 56)
    both = network.forward_prompted(
        image, boxes=boxes[:1], points=points, point_labels=labels
    )
    assert not torch.allclose(both, network.forward_prompted(image, boxes=boxes[:1]))


@pytest.mark.parametrize(
    ("backbone", "size"), [("lite_medsam", 128), ("mobile_sam", 128), ("sam_vit_b", 64)]
)
def test_registered_backbones_run_at_non_native_sizes(backbone: str, size: int) -> None:
    network, _ = build_network(backbone, 4, 3, image_size=size, pretrained=False)
    network.eval()
    native_size = BACKBONES[backbone].native_size
    with torch.no_grad():
        embeddings = network.encode(torch.randn(1, 4, 50, 70))
        logits = network.decode(embeddings, (50, 70))
    assert embeddings.shape[-2:] == (size * 64 // native_size,) * 2
    assert logits.shape == (1, 3, 50, 70)


def test_lite_medsam_lora_checkpoint_is_a_small_fraction_of_its_weights(
    tmp_path,
) -> None:
    network, base = build_network("lite_medsam", in_channels=1, num_classes=3)
    config = PeftConfig(
        method="lora", parts=("encoder", "decoder"), trainable_extra=("class_head",)
    )
    apply_peft(network, config)
    save_trained(network, tmp_path / "lora.pt", asdict(base))
    ratio = (tmp_path / "lora.pt").stat().st_size / Path(base.path).stat().st_size
    assert ratio < 0.1, f"{ratio:.1%} of {base.path}"
