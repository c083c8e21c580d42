"""Users' SAM weight files: the seed study's, MedSAM's and SAM-Med2D's layouts load with what
was changed reported, or are refused naming the keys and the fix.

Files are built from toy SAMs (segment_anything's own modules at toy width), registered as
backbones for the test; the real ViT-B and TinyViT layouts are checked on the meta device
(names and shapes, no data).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_sam
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, TwoWayTransformer

from samnet.core.errors import SamnetError
from samnet.models.backbones import BACKBONES, build_sam
from samnet.models.checkpoint_files import (
    CHECKPOINT_DIRS_VARIABLE,
    file_sha256,
    fitting_backbones,
)
from samnet.models.weight_remapping import remap_state

TINY = "tiny_vit"  # the toy SAM as a backbone: 64 px, patches of 8, width 32
WIDE = "tiny_vit_wide"  # another architecture: width 48
RANK = 2
MASK_TOKENS = "mask_decoder.mask_tokens.weight"
IOU_ROWS = "mask_decoder.iou_prediction_head.layers.1."  # the toy IoU head's last layer


@pytest.fixture(autouse=True)
def toy_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy SAMs as registered backbones; no SAMNET_CHECKPOINTS of this machine."""
    monkeypatch.delenv(CHECKPOINT_DIRS_VARIABLE, raising=False)
    base = BACKBONES["sam_vit_b"]
    for name, width in ((TINY, 32), (WIDE, 48)):
        spec = dataclasses.replace(
            base,
            name=name,
            title=f"toy SAM {width}",
            native_size=64,
            embedding_stride=8,
            checkpoint_filenames=(f"{name}.pth",),
            build=lambda width=width: tiny_sam(dim=width),
        )
        monkeypatch.setitem(BACKBONES, name, spec)


def seed_study_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the seed study's LoRA layers (finetune-SAM's ``models/sam_LoRa.py``):
    every encoder qkv wrapped with query and value factors, every decoder q/v projection
    with ``w_a``/``w_b``; the factors random, as after training."""
    generator = torch.Generator().manual_seed(1)
    layout = {}
    for key, tensor in state.items():
        if re.match(r"image_encoder\.blocks\.\d+\.attn\.qkv\.", key):
            layer, _, param = key.rpartition(".")
            layout[f"{layer}.qkv.{param}"] = tensor
            if param == "weight":
                dim = tensor.shape[1]
                for part in "qv":
                    layout[f"{layer}.linear_a_{part}.weight"] = torch.randn(
                        RANK, dim, generator=generator
                    )
                    layout[f"{layer}.linear_b_{part}.weight"] = torch.randn(
                        dim, RANK, generator=generator
                    )
        elif re.match(r"mask_decoder\.transformer\..*[qv]_proj\.", key):
            layer, _, param = key.rpartition(".")
            layout[f"{layer}.proj.{param}"] = tensor
            if param == "weight":
                out_dim, in_dim = tensor.shape
                layout[f"{layer}.w_a.weight"] = torch.randn(
                    RANK, in_dim, generator=generator
                )
                layout[f"{layer}.w_b.weight"] = torch.randn(
                    out_dim, RANK, generator=generator
                )
        else:
            layout[key] = tensor
    return layout


def with_adapters(
    state: dict[str, torch.Tensor], names: tuple[str, ...], blocks: range
) -> dict[str, torch.Tensor]:
    """``state`` plus two-layer bottleneck adapters ``names`` in encoder ``blocks``."""
    dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
    extra = {
        f"image_encoder.blocks.{block}.{name}.{layer}.{param}": torch.randn(*shape)
        for block in blocks
        for name in names
        for layer, param, shape in (
            ("D_fc1", "weight", (dim // 4, dim)),
            ("D_fc1", "bias", (dim // 4,)),
            ("D_fc2", "weight", (dim, dim // 4)),
        )
    }
    return {**state, **extra}


def with_mask_tokens(
    state: dict[str, torch.Tensor], count: int
) -> dict[str, torch.Tensor]:
    """``state`` with ``count`` mask tokens (the seed study's ``num_multimask_outputs + 1``)."""
    dim = state[MASK_TOKENS].shape[1]
    changed = {
        key: tensor
        for key, tensor in state.items()
        if not (
            match := re.match(r"mask_decoder\.output_hypernetworks_mlps\.(\d+)\.", key)
        )
        or int(match[1]) < count
    }
    for index in range(4, count):
        for key in [
            k
            for k in state
            if k.startswith("mask_decoder.output_hypernetworks_mlps.0.")
        ]:
            changed[key.replace("mlps.0.", f"mlps.{index}.")] = torch.randn_like(
                state[key]
            )
    changed[MASK_TOKENS] = torch.randn(count, dim)
    for param in ("weight", "bias"):
        rows = state[IOU_ROWS + param]
        changed[IOU_ROWS + param] = torch.randn(count, *rows.shape[1:])
    return changed


def save(path: Path, content: object) -> Path:
    torch.save(content, path)
    return path


def test_seed_study_file_loads_with_lora_merged_and_mask_tokens_matched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Wrapped, prefixed, LoRA, adapters and 2 mask tokens: everything loads, reported."""
    original = tiny_sam()
    state = with_mask_tokens(original.state_dict(), 2)
    layout = with_adapters(
        seed_study_layout(state), ("MLP_Adapter", "Space_Adapter"), range(2)
    )
    path = save(
        tmp_path / "sslsam.pth",
        {"model": {f"module.{k}": v for k, v in layout.items()}, "epoch": 9},
    )
    loaded, weights = build_sam(TINY, checkpoint=path)

    # The LoRA acts as the seed study's forward adds it: qkv(x) + [B_q A_q x, 0, B_v A_v x].
    x = torch.randn(5, 32)
    block = "image_encoder.blocks.1.attn.qkv"
    expected = F.linear(x, layout[f"{block}.qkv.weight"], layout[f"{block}.qkv.bias"])
    expected[:, :32] += (
        x
        @ layout[f"{block}.linear_a_q.weight"].T
        @ layout[f"{block}.linear_b_q.weight"].T
    )
    expected[:, -32:] += (
        x
        @ layout[f"{block}.linear_a_v.weight"].T
        @ layout[f"{block}.linear_b_v.weight"].T
    )
    with torch.no_grad():
        assert torch.allclose(
            loaded.image_encoder.blocks[1].attn.qkv(x), expected, atol=1e-5
        )
    projection = "mask_decoder.transformer.layers.0.cross_attn_token_to_image.v_proj"
    expected = F.linear(
        x, layout[f"{projection}.proj.weight"], layout[f"{projection}.proj.bias"]
    )
    expected += (
        x @ layout[f"{projection}.w_a.weight"].T @ layout[f"{projection}.w_b.weight"].T
    )
    layer = loaded.mask_decoder.transformer.layers[0]
    with torch.no_grad():
        actual = layer.cross_attn_token_to_image.v_proj(x)
    assert torch.allclose(actual, expected, atol=1e-5)

    decoder = loaded.mask_decoder
    assert torch.equal(decoder.mask_tokens.weight[:2], state[MASK_TOKENS])
    assert torch.equal(decoder.mask_tokens.weight[3], state[MASK_TOKENS][0])
    assert torch.equal(
        decoder.output_hypernetworks_mlps[2].layers[2].bias,
        state["mask_decoder.output_hypernetworks_mlps.0.layers.2.bias"],
    )
    assert torch.equal(
        decoder.iou_prediction_head.layers[1].bias[:2], state[IOU_ROWS + "bias"]
    )
    key = "mask_decoder.output_hypernetworks_mlps.1.layers.0.weight"
    assert torch.equal(
        decoder.output_hypernetworks_mlps[1].layers[0].weight, state[key]
    )
    assert torch.equal(
        loaded.image_encoder.neck[0].weight, state["image_encoder.neck.0.weight"]
    )

    notes = "\n".join(weights.adjustments)
    assert "unwrapped the weights under 'model' (ignored: epoch)" in notes
    assert "stripped the key prefix 'module.' from" in notes
    assert (
        "merged their LoRA into 16 linear layers (2 in the image_encoder, 14 in the mask_decoder)"
        in notes
    )
    assert (
        "dropped 12 adapter tensors in 4 adapter modules: image_encoder.blocks.0.MLP_Adapter"
        in notes
    )
    assert "has 2 mask tokens, samnet's SAM 4: tokens 0-1 loaded" in notes
    assert "tokens 2-3 start as copies of token 0" in notes
    # The identity is the file's; what was changed is printed once per process.
    assert weights.sha256 == file_sha256(path)
    printed = capsys.readouterr().out
    assert (
        f"samnet: {path.resolve()} loaded as the toy SAM 32 weights, changed:"
        in printed
    )
    assert all(note in printed for note in weights.adjustments)
    again, second = build_sam(TINY, checkpoint=path)
    assert capsys.readouterr().out == ""
    assert second == weights
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.state_dict().values(), loaded.state_dict().values())
    )


def test_more_mask_tokens_than_sam_drops_the_extra_ones(tmp_path: Path) -> None:
    state = with_mask_tokens(tiny_sam().state_dict(), 6)
    loaded, weights = build_sam(TINY, checkpoint=save(tmp_path / "six.pth", state))
    assert torch.equal(loaded.mask_decoder.mask_tokens.weight, state[MASK_TOKENS][:4])
    assert len(loaded.mask_decoder.output_hypernetworks_mlps) == 4
    assert any(
        "the file's tokens 4-5 are dropped" in note for note in weights.adjustments
    )


def test_medsam_layout_loads_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MedSAM's medsam_vit_b.pth is a plain SAM state dict: nothing to change or report."""
    original = tiny_sam()
    path = save(tmp_path / "medsam_vit_b.pth", original.state_dict())
    loaded, weights = build_sam(TINY, checkpoint=path)
    assert weights.adjustments == ()
    assert capsys.readouterr().out == ""
    for (name, tensor), (_, expected) in zip(
        loaded.state_dict().items(), original.state_dict().items()
    ):
        assert torch.equal(tensor, expected), name


def test_sam_med2d_layout_runs_as_trained(tmp_path: Path) -> None:
    """SAM-Med2D: trained at a quarter of SAM's input size with an adapter in each encoder
    block, saved under "model" beside its optimizer's state. Without the adapters the
    encoder computes what the same network trained at that size computes."""
    trained = tiny_sam(size=32)  # position embedding 4 x 4, global tables of length 7
    state = trained.state_dict()
    dim = 32
    adapters = {
        f"image_encoder.blocks.{block}.Adapter.{name}": torch.randn(*shape)
        for block in range(2)
        for name, shape in (
            ("norm.weight", (dim,)),
            ("channel.0.weight", (dim // 4, dim)),
            ("channel.2.weight", (dim, dim // 4)),
            ("spatial.0.weight", (dim, dim, 3, 3)),
            ("spatial.2.weight", (dim, dim, 4, 4)),
        )
    }
    optimizer = {
        "state": {0: {"step": torch.tensor(3.0)}},
        "param_groups": [{"lr": 1e-4, "params": [0]}],
    }
    path = save(
        tmp_path / "sam-med2d_b.pth",
        {"model": {**state, **adapters}, "optimizer": optimizer},
    )
    loaded, weights = build_sam(TINY, checkpoint=path, image_size=32)

    encoder = loaded.image_encoder
    assert torch.equal(encoder.pos_embed, state["image_encoder.pos_embed"])
    assert torch.equal(
        encoder.blocks[1].attn.rel_pos_h, state["image_encoder.blocks.1.attn.rel_pos_h"]
    )
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(encoder(image), trained.image_encoder(image), atol=1e-6)
    notes = "\n".join(weights.adjustments)
    assert "unwrapped the weights under 'model' (ignored: optimizer)" in notes
    assert (
        "dropped 10 adapter tensors in 2 adapter modules: image_encoder.blocks.0.Adapter, image_encoder.blocks.1.Adapter"
        in notes
    )
    assert (
        "position embedding at 4 x 4 patches (SAM's: 8 x 8; trained at 32 px, which --input-size 32 runs unresampled)"
        in notes
    )
    assert (
        "relative-position tables of 1 global-attention block at length 7 (SAM's: 15)"
        in notes
    )

    native, _ = build_sam(TINY, checkpoint=path)  # at 64 px: the embedding is resampled
    assert native.image_encoder.pos_embed.shape == (1, 8, 8, 32)
    assert native.image_encoder.blocks[1].attn.rel_pos_h.shape == (7, 16)


def test_optimizer_object_is_refused_with_how_to_extract_the_weights(
    tmp_path: Path,
) -> None:
    """SAM-Med2D's train.py pickles the optimizer object itself: never unpickled."""
    model = tiny_sam()
    optimizer = torch.optim.Adam(model.parameters())
    path = save(
        tmp_path / "epoch1_sam.pth",
        {"model": model.state_dict(), "optimizer": optimizer},
    )
    with pytest.raises(
        SamnetError, match="pickles Python objects besides tensors"
    ) as error:
        build_sam(TINY, checkpoint=path)
    assert "torch.optim.adam.Adam" in error.value.problem
    assert (
        "weights_only=False" in error.value.fix
        and f"{path}.weights.pth" in error.value.fix
    )


def test_wrong_backbone_is_refused_naming_keys_and_the_backbone_it_fits(
    tmp_path: Path,
) -> None:
    wide = with_adapters(tiny_sam(dim=48).state_dict(), ("Adapter",), range(1))
    path = save(tmp_path / "wide.pth", {"state_dict": wide})
    with pytest.raises(
        SamnetError, match=f"does not hold the weights of backbone '{TINY}'"
    ) as error:
        build_sam(TINY, checkpoint=path)
    assert error.value.path == path
    assert re.search(
        r"\d+ keys with another shape: image_encoder\.blocks\.0\.attn\.proj\.bias \(file \(48,\), model \(32,\)\), .*\(\d+ more\)",
        error.value.problem,
    )
    assert f"the file fits backbone '{WIDE}': pass --backbone {WIDE}" in error.value.fix

    # A real ViT-B file given as ViT-L fits both ViT-B backbones, which differ only in input.
    with torch.device("meta"):
        state = sam_model_registry["vit_b"]().state_dict()
    fitting = fitting_backbones(state, BACKBONES["sam_vit_l"], BACKBONES.values())
    assert fitting == ["sam_vit_b", "medsam_vit_b"]


def test_missing_base_keys_are_refused_even_beside_adapters(tmp_path: Path) -> None:
    state = with_adapters(tiny_sam().state_dict(), ("Adapter",), range(2))
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra_head.weight"] = torch.zeros(2)
    with pytest.raises(SamnetError) as error:
        build_sam(TINY, checkpoint=save(tmp_path / "partial.pth", state))
    assert (
        "1 key missing from the file: mask_decoder.iou_token.weight"
        in error.value.problem
    )
    assert (
        "1 key unknown to the model: mask_decoder.extra_head.weight"
        in error.value.problem
    )
    assert (
        "--checkpoint PATH" in error.value.fix
    )  # fits no backbone: where weights come from


def test_lora_of_unknown_scale_is_refused(tmp_path: Path) -> None:
    """peft's layout keeps alpha in adapter_config.json, not in the state dict."""
    state = tiny_sam().state_dict()
    weight = state.pop("image_encoder.blocks.0.attn.qkv.weight")
    state["image_encoder.blocks.0.attn.qkv.base_layer.weight"] = weight
    state["image_encoder.blocks.0.attn.qkv.lora_A.default.weight"] = torch.zeros(
        RANK, 32
    )
    state["image_encoder.blocks.0.attn.qkv.lora_B.default.weight"] = torch.zeros(
        96, RANK
    )
    with pytest.raises(SamnetError, match="scale") as error:
        build_sam(TINY, checkpoint=save(tmp_path / "peft.pth", state))
    assert (
        "3 keys of LoRA: image_encoder.blocks.0.attn.qkv.base_layer.weight"
        in error.value.problem
    )
    assert "merge_and_unload()" in error.value.fix


def test_torn_and_foreign_files_are_refused(tmp_path: Path) -> None:
    whole = save(tmp_path / "whole.pth", tiny_sam().state_dict()).read_bytes()
    torn = tmp_path / "torn.pth"
    torn.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        SamnetError, match="cannot be read as a PyTorch checkpoint"
    ) as error:
        build_sam(TINY, checkpoint=torn)
    assert error.value.path == torn
    with pytest.raises(SamnetError, match="is not a state dict"):
        build_sam(
            TINY, checkpoint=save(tmp_path / "numbers.pth", {"model": {"epoch": 3}})
        )


def test_real_layouts_fit_the_real_architectures() -> None:
    """On the meta device: SAM-Med2D (ViT-B at 256 px with its adapters) and the seed
    study's ViT-B (LoRA, 3 mask tokens) fit sam_vit_b; its MobileSAM LoRA fits mobile_sam."""
    with torch.device("meta"):
        vit_b = BACKBONES["sam_vit_b"].build()
        sam_med2d = ImageEncoderViT(
            img_size=256, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4,
            norm_layer=lambda dim: torch.nn.LayerNorm(dim, eps=1e-6), qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=(2, 5, 8, 11), window_size=14,
            out_chans=256,
        ).state_dict()  # fmt: skip
        seed_decoder = MaskDecoder(
            num_multimask_outputs=2,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=256,
        ).state_dict()
        mobile_sam = BACKBONES["mobile_sam"].build()
    state = vit_b.state_dict()
    decoder_free = {k: v for k, v in state.items() if not k.startswith("mask_decoder.")}
    encoder = {f"image_encoder.{key}": tensor for key, tensor in sam_med2d.items()}
    adapters = {
        f"image_encoder.blocks.{block}.Adapter.{name}": torch.empty(shape, device="meta")
        for block in range(12)
        for name, shape in (
            ("norm.weight", (768,)), ("norm.bias", (768,)),
            ("channel.0.weight", (192, 768)), ("channel.2.weight", (768, 192)),
            ("spatial.0.weight", (768, 768, 3, 3)), ("spatial.2.weight", (768, 768, 4, 4)),
        )
    }  # fmt: skip
    remapped = remap_state(vit_b, {**state, **encoder, **adapters})
    assert remapped.problems == ()
    assert len(remapped.trained_shapes) == 1 + 4 * 2
    assert any(
        "16 x 16 patches (SAM's: 64 x 64; trained at 256 px" in n
        for n in remapped.notes
    )
    assert any(
        "dropped 72 adapter tensors in 12 adapter modules" in n for n in remapped.notes
    )

    decoder = {f"mask_decoder.{key}": tensor for key, tensor in seed_decoder.items()}
    remapped = remap_state(vit_b, seed_study_layout({**decoder_free, **decoder}))
    assert remapped.problems == ()
    assert any(
        "into 26 linear layers (12 in the image_encoder, 14 in the mask_decoder)" in n
        for n in remapped.notes
    )
    assert any("has 3 mask tokens, samnet's SAM 4" in n for n in remapped.notes)

    state = mobile_sam.state_dict()
    layout = {}
    for key, tensor in state.items():
        layer, _, param = key.rpartition(".")
        if re.match(r"image_encoder\.layers\.[1-3]\.blocks\.\d+\.attn\.qkv$", layer):
            layout[f"{layer}.qkv.{param}"] = tensor
            if param == "weight":
                dim = tensor.shape[1]
                layout[f"{layer}.linear_a_q.weight"] = torch.empty(
                    RANK, dim, device="meta"
                )
                layout[f"{layer}.linear_b_q.weight"] = torch.empty(
                    dim, RANK, device="meta"
                )
        else:
            layout[key] = tensor
    remapped = remap_state(mobile_sam, layout)
    assert remapped.problems == ()
    assert any(
        "into 10 linear layers (10 in the image_encoder)" in n for n in remapped.notes
    )
