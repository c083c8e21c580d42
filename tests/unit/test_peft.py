"""PEFT as configuration on toy SAM models with both encoder naming schemes.

``sam_vit_b`` and ``medsam_vit_b`` stand for segment-anything's ``ImageEncoderViT``,
``mobile_sam`` for a hand-built module tree with MobileSAM's TinyViT names; all three
share a toy ``MaskDecoder`` and are run prompt-free through learned class tokens.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)
from torch import nn

from samnet.core.errors import SamnetError
from samnet.models.adapter import Adapter
from samnet.models.backbones import build_sam
from samnet.models.lora import LoRALinear, merge_lora
from samnet.models.peft import (
    ParameterCount,
    PeftConfig,
    apply_peft,
    count_parameters,
    trainable_parameters,
    transformer_blocks,
)
from samnet.models.trained_checkpoint import load_trained, save_trained

DIM = 32  # encoder output channels = decoder transformer width
GRID = 4  # image embedding side: 32 px images, patch 8
DECODER_ATTENTION_LINEARS = (
    2 * 3 + 1
) * 4  # 2 layers x 3 attentions + final, q/k/v/out
ENCODER_BLOCKS = {"sam_vit_b": 2, "medsam_vit_b": 2, "mobile_sam": 3}
BASE = {"backbone": "toy", "sha256": "a" * 64, "path": "toy.pth"}


def conv_bn(in_channels: int, out_channels: int, groups: int = 1) -> nn.Sequential:
    """TinyViT's ``Conv2d_BN`` names: ``c`` and ``bn``."""
    return nn.Sequential(
        OrderedDict(
            c=nn.Conv2d(
                in_channels, out_channels, 3, padding=1, groups=groups, bias=False
            ),
            bn=nn.BatchNorm2d(out_channels),
        )
    )


class ConvBlock(nn.Module):
    """Stand-in for TinyViT's MBConv (stage 0: convolutions only)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn(DIM, DIM)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.conv1(x))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(DIM), dim=-1)
        return self.proj(weights @ v)


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.fc1 = nn.Linear(DIM, 2 * DIM)
        self.fc2 = nn.Linear(2 * DIM, DIM)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """``B x N x C -> B x N x C`` on a ``GRID x GRID`` token grid."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()
        self.local_conv = conv_bn(DIM, DIM, groups=DIM)
        self.mlp = Mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        grid = x.transpose(1, 2).reshape(x.shape[0], DIM, GRID, GRID)
        x = self.local_conv(grid).flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class Stage(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class TinyViTLike(nn.Module):
    """MobileSAM's TinyViT names at toy size: ``layers.0`` convolutional, then
    ``layers.1.blocks.0-1`` and ``layers.2.blocks.0`` (3 transformer blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, DIM, 8, stride=8)
        self.layers = nn.ModuleList(
            [
                Stage([ConvBlock()]),
                Stage([TinyViTBlock(), TinyViTBlock()]),
                Stage([TinyViTBlock()]),
            ]
        )
        self.neck = nn.Conv2d(DIM, DIM, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers[0](self.patch_embed(x))
        tokens = x.flatten(2).transpose(1, 2)
        for stage in self.layers[1:]:
            tokens = stage(tokens)
        return self.neck(tokens.transpose(1, 2).reshape_as(x))


class PromptFreeSam(nn.Module):
    """``B x 3 x 32 x 32`` -> ``B x 3 x 16 x 16``; K=3 class tokens are the prompts."""

    def __init__(self, image_encoder: nn.Module) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = PromptEncoder(
            embed_dim=DIM,
            image_embedding_size=(GRID, GRID),
            input_image_size=(8 * GRID, 8 * GRID),
            mask_in_chans=4,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=DIM,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=DIM, mlp_dim=2 * DIM, num_heads=2
            ),
            iou_head_depth=2,
            iou_head_hidden_dim=16,
        )
        self.class_head = nn.Embedding(3, DIM)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embeddings = self.image_encoder(images)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        masks = [
            self.mask_decoder(
                image_embeddings=embedding,
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=self.class_head.weight[None],
                dense_prompt_embeddings=dense.expand(1, -1, GRID, GRID),
                multimask_output=True,
            )[0]
            for embedding in embeddings.split(1)
        ]
        return torch.cat(masks)


def build(backbone: str) -> PromptFreeSam:
    """The same random toy model for the same backbone name."""
    torch.manual_seed(0)
    if backbone == "mobile_sam":
        encoder = TinyViTLike()
    else:
        encoder = ImageEncoderViT(
            img_size=8 * GRID,
            patch_size=8,
            embed_dim=DIM,
            depth=2,
            num_heads=2,
            window_size=2,
            global_attn_indexes=(1,),
            use_rel_pos=True,
            out_chans=DIM,
        )
    return PromptFreeSam(encoder)


def adapted(backbone: str, **fields) -> PromptFreeSam:
    fields.setdefault("trainable_extra", ("class_head",))
    return apply_peft(build(backbone), PeftConfig(**fields))


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(
        batch, 3, 8 * GRID, 8 * GRID, generator=torch.Generator().manual_seed(1)
    )


def train_steps(model: nn.Module, steps: int = 3) -> None:
    """AdamW with weight decay on the trainable parameters only, in training mode."""
    optimizer = torch.optim.AdamW(
        trainable_parameters(model), lr=1e-2, weight_decay=0.1
    )
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        (model(images()) - step).square().mean().backward()
        optimizer.step()
    model.eval()


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def output(model: nn.Module) -> torch.Tensor:
    return model.eval()(images())


# --- the 18 strategies of Gu et al. ---------------------------------------------------


@pytest.mark.parametrize("method", ["full", "adapter", "lora"])
@pytest.mark.parametrize("parts", [("decoder",), ("encoder", "decoder")])
@pytest.mark.parametrize("backbone", ["sam_vit_b", "medsam_vit_b", "mobile_sam"])
def test_each_study_strategy_trains_what_it_names(backbone, parts, method):
    model = adapted(
        backbone,
        method=method,
        parts=parts,
        lora_targets=("encoder_attention", "decoder_attention"),
    )
    trainable = trainable_names(model)
    assert {"class_head.weight"} <= trainable
    assert not any(name.startswith("prompt_encoder.") for name in trainable)
    in_encoder = {n for n in trainable if n.startswith("image_encoder.")}
    in_decoder = {n for n in trainable if n.startswith("mask_decoder.")}
    assert bool(in_encoder) == ("encoder" in parts)
    if method == "full":
        for prefix, part in (
            ("image_encoder.", "encoder"),
            ("mask_decoder.", "decoder"),
        ):
            names = {n for n, _ in model.named_parameters() if n.startswith(prefix)}
            assert (names <= trainable) == (part in parts)
        return
    new_module = LoRALinear if method == "lora" else Adapter
    # Only the new modules' parameters train inside the parts.
    assert all(
        re.search(r"\.(lora_[ab]|adapter|parallel_adapter)\.", name)
        for name in in_encoder | in_decoder
    )
    counts = {
        prefix: sum(
            isinstance(module, new_module)
            for name, module in model.named_modules()
            if name.startswith(prefix)
        )
        for prefix in ("image_encoder.", "mask_decoder.")
    }
    encoder_blocks = ENCODER_BLOCKS[backbone] if "encoder" in parts else 0
    if method == "lora":
        assert counts == {
            "image_encoder.": 2 * encoder_blocks,  # qkv, proj
            "mask_decoder.": DECODER_ATTENTION_LINEARS,
        }
    else:
        # Gu et al.'s placement: after attention and beside the MLP in each encoder block;
        # after both cross-attentions and beside the MLP in each of the 2 decoder blocks.
        assert counts == {"image_encoder.": 2 * encoder_blocks, "mask_decoder.": 6}


def test_lora_mlp_targets_cover_both_naming_schemes():
    for backbone, names in (
        ("sam_vit_b", ("lin1", "lin2")),
        ("mobile_sam", ("fc1", "fc2")),
    ):
        model = adapted(
            backbone, method="lora", parts=("encoder",), lora_targets=("encoder_mlp",)
        )
        wrapped = {
            name.rpartition(".")[2]
            for name, module in model.named_modules()
            if isinstance(module, LoRALinear)
        }
        assert wrapped == set(names)


def test_lora_encoder_with_full_decoder():
    model = adapted(
        "mobile_sam", method="lora", parts=("encoder",), full_parts=("decoder",)
    )
    trainable = trainable_names(model)
    decoder = {n for n, _ in model.named_parameters() if n.startswith("mask_decoder.")}
    assert decoder <= trainable
    assert not any(isinstance(m, LoRALinear) for m in model.mask_decoder.modules())
    assert all("lora_" in n for n in trainable if n.startswith("image_encoder."))


def test_frozen_trains_only_the_extra_modules():
    model = adapted("sam_vit_b", method="frozen", trainable_extra=("class_head",))
    assert trainable_names(model) == {"class_head.weight"}


# --- encoder block selection ----------------------------------------------------------


def test_tinyvit_blocks_flatten_over_attention_stages():
    names = [name for name, _ in transformer_blocks(build("mobile_sam").image_encoder)]
    assert names == ["layers.1.blocks.0", "layers.1.blocks.1", "layers.2.blocks.0"]
    names = [name for name, _ in transformer_blocks(build("sam_vit_b").mask_decoder)]
    assert names == ["transformer.layers.0", "transformer.layers.1"]


def test_lite_medsam_tinyvit_has_ten_blocks_and_starts_exact():
    sam, _ = build_sam("lite_medsam", image_size=64, pretrained=False)
    names = [name for name, _ in transformer_blocks(sam.image_encoder)]
    assert names == [f"layers.1.blocks.{j}" for j in range(2)] + [
        f"layers.2.blocks.{j}" for j in range(6)
    ] + [f"layers.3.blocks.{j}" for j in range(2)]
    base = copy.deepcopy(sam)
    config = PeftConfig(
        method="lora",
        parts=("encoder",),
        lora_targets=("encoder_attention", "encoder_mlp"),
    )
    apply_peft(sam, config)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(sam.image_encoder(x), base.image_encoder(x))


@pytest.mark.parametrize(
    ("backbone", "blocks", "expected"),
    [
        ("mobile_sam", (-1,), {"layers.2.blocks.0"}),
        ("mobile_sam", (0, 2), {"layers.1.blocks.0", "layers.2.blocks.0"}),
        ("sam_vit_b", (-2, -1), {"blocks.0", "blocks.1"}),
    ],
)
def test_encoder_blocks_pick_where_adapters_go(backbone, blocks, expected):
    model = adapted(
        backbone, method="adapter", parts=("encoder",), encoder_blocks=blocks
    )
    adapted_blocks = {
        name
        for name, block in transformer_blocks(model.image_encoder)
        if any(isinstance(module, Adapter) for module in block.modules())
    }
    assert adapted_blocks == expected


def test_encoder_blocks_out_of_range_is_a_clear_error():
    with pytest.raises(SamnetError, match="encoder has 3 transformer blocks"):
        adapted("mobile_sam", method="lora", parts=("encoder",), encoder_blocks=(3,))


# --- exactness at initialisation, LoRA and adapter maths ------------------------------


@pytest.mark.parametrize("method", ["lora", "adapter"])
@pytest.mark.parametrize("backbone", ["sam_vit_b", "mobile_sam"])
def test_adapted_model_starts_exactly_as_the_base(backbone, method):
    base = build(backbone)
    model = apply_peft(
        copy.deepcopy(base),
        PeftConfig(
            method=method,
            parts=("encoder", "decoder"),
            lora_targets=("encoder_attention", "encoder_mlp", "decoder_attention"),
            lora_dropout=0.1,
        ),
    )
    assert torch.equal(output(model), output(base))


def test_lora_linear_computes_the_low_rank_update():
    linear = nn.Linear(16, 8)
    lora = LoRALinear(linear, rank=2, alpha=6.0, dropout=0.0)
    assert lora.weight is linear.weight and lora.bias is linear.bias
    assert torch.equal(lora.lora_b.weight, torch.zeros(8, 2))
    bound = 1 / math.sqrt(16)  # kaiming_uniform_(a=sqrt(5)) as nn.Linear
    assert 0 < lora.lora_a.weight.abs().max() <= bound
    nn.init.normal_(lora.lora_b.weight)
    x = torch.randn(5, 16)
    expected = linear(x) + 3.0 * x @ lora.lora_a.weight.T @ lora.lora_b.weight.T
    torch.testing.assert_close(lora(x), expected)


def test_adapter_starts_as_identity_and_adds_a_bottleneck():
    adapter = Adapter(dim=8, hidden_dim=2)
    x = torch.randn(3, 8)
    assert torch.equal(adapter(x), x)
    nn.init.normal_(adapter.up.weight)
    assert not torch.equal(adapter(x), x)


def test_adapter_width_follows_the_ratio():
    model = adapted(
        "sam_vit_b", method="adapter", parts=("encoder", "decoder"), adapter_ratio=0.25
    )
    block = model.mask_decoder.transformer.layers[0]
    for adapter in (block.norm2.adapter, block.mlp.parallel_adapter):
        assert (adapter.down.in_features, adapter.down.out_features) == (DIM, DIM // 4)
    adapter = model.image_encoder.blocks[0].attn.adapter
    assert (adapter.down.in_features, adapter.down.out_features) == (DIM, DIM // 4)


# --- adapter placements ---------------------------------------------------------------


def randomised_adapters(model: nn.Module) -> list[Adapter]:
    """The model's adapters, their zero up-projections made random (as after training)."""
    torch.manual_seed(3)
    adapters = [m for m in model.modules() if isinstance(m, Adapter)]
    for adapter in adapters:
        nn.init.normal_(adapter.up.weight, std=0.5)
        nn.init.normal_(adapter.up.bias, std=0.5)
    return adapters


def bottleneck(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    return adapter.up(adapter.act(adapter.down(x)))


@torch.no_grad()
def test_gu_placement_in_a_sam_vit_block():
    """Medical SAM Adapter's block: x + a(attn(norm1 x)), then + mlp(z) + 0.5 f(z)."""
    base = build("sam_vit_b")
    model = adapted("sam_vit_b", method="adapter", parts=("encoder",))
    randomised_adapters(model)
    block, plain = model.image_encoder.blocks[1], base.image_encoder.blocks[1]
    assert block.window_size == 0  # the global-attention block: no windows to undo
    x = torch.randn(2, GRID, GRID, DIM)
    attended = plain.attn(plain.norm1(x))
    x1 = x + attended + bottleneck(block.attn.adapter, attended)
    z = plain.norm2(x1)
    expected = x1 + plain.mlp(z) + 0.5 * bottleneck(block.mlp.parallel_adapter, z)
    torch.testing.assert_close(block(x), expected)


@torch.no_grad()
def test_gu_placement_in_a_two_way_decoder_block():
    """Gu et al.'s decoder block: an adapter on each cross-attention's residual sum, one
    beside the MLP (segment-anything's TwoWayAttentionBlock.forward, adapters added)."""
    base = build("sam_vit_b")
    model = adapted("sam_vit_b", method="adapter", parts=("decoder",))
    randomised_adapters(model)
    block = model.mask_decoder.transformer.layers[1]
    plain = base.mask_decoder.transformer.layers[1]
    tokens, image = torch.randn(2, 3, DIM), torch.randn(2, GRID * GRID, DIM)
    query_pe, key_pe = torch.randn(2, 3, DIM), torch.randn(2, GRID * GRID, DIM)

    def adapt(adapter: Adapter, y: torch.Tensor) -> torch.Tensor:
        return y + bottleneck(adapter, y)

    q = tokens + query_pe
    queries = plain.norm1(tokens + plain.self_attn(q=q, k=q, v=tokens))
    attended = plain.cross_attn_token_to_image(
        q=queries + query_pe, k=image + key_pe, v=image
    )
    queries = plain.norm2(adapt(block.norm2.adapter, queries + attended))
    parallel = 0.5 * bottleneck(block.mlp.parallel_adapter, queries)
    queries = plain.norm3(queries + plain.mlp(queries) + parallel)
    attended = plain.cross_attn_image_to_token(
        q=image + key_pe, k=queries + query_pe, v=queries
    )
    keys = plain.norm4(adapt(block.norm4.adapter, image + attended))
    got_queries, got_keys = block(tokens, image, query_pe, key_pe)
    torch.testing.assert_close(got_queries, queries)
    torch.testing.assert_close(got_keys, keys)


@torch.no_grad()
def test_gu_placement_in_a_tinyvit_block_sees_the_mlp_input():
    """TinyViT's MLP normalises inside: the parallel adapter gets its raw input."""
    base = build("mobile_sam")
    model = adapted("mobile_sam", method="adapter", parts=("encoder",))
    randomised_adapters(model)
    block = model.image_encoder.layers[1].blocks[0]
    plain = base.image_encoder.layers[1].blocks[0]
    x = torch.randn(2, GRID * GRID, DIM)
    attended = plain.attn(x)
    torch.testing.assert_close(
        block.attn(x), attended + bottleneck(block.attn.adapter, attended)
    )
    expected = plain.mlp(x) + 0.5 * bottleneck(block.mlp.parallel_adapter, x)
    torch.testing.assert_close(block.mlp(x), expected)


@pytest.mark.parametrize("placement", ["attention_and_parallel_mlp", "sequential_mlp"])
@pytest.mark.parametrize("backbone", ["sam_vit_b", "mobile_sam"])
def test_base_checkpoints_load_into_either_placement(backbone, placement):
    base = build(backbone)
    model = adapted(
        backbone,
        method="adapter",
        parts=("encoder", "decoder"),
        adapter_placement=placement,
    )
    result = model.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys
    assert all(
        re.search(r"\.(adapter|parallel_adapter)\.", n) for n in result.missing_keys
    )


def test_sequential_placement_is_one_adapter_after_each_mlp():
    model = adapted(
        "sam_vit_b",
        method="adapter",
        parts=("encoder", "decoder"),
        adapter_placement="sequential_mlp",
    )
    adapter_names = {
        name for name, m in model.named_modules() if isinstance(m, Adapter)
    }
    assert adapter_names == {
        "image_encoder.blocks.0.mlp.adapter",
        "image_encoder.blocks.1.mlp.adapter",
        "mask_decoder.transformer.layers.0.mlp.adapter",
        "mask_decoder.transformer.layers.1.mlp.adapter",
    }
    randomised_adapters(model)
    mlp = model.mask_decoder.transformer.layers[0].mlp
    plain = build("sam_vit_b").mask_decoder.transformer.layers[0].mlp
    x = torch.randn(2, 3, DIM)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), mlp.adapter(plain(x)))


def test_gu_placement_is_the_default_and_old_configs_keep_theirs():
    assert PeftConfig().adapter_placement == "attention_and_parallel_mlp"
    # A plan or checkpoint from before the field: the placement it was trained with.
    old = PeftConfig.from_dict({"method": "adapter", "parts": ["decoder"]})
    assert old.adapter_placement == "sequential_mlp"


def test_checkpoint_without_a_placement_loads_as_before(tmp_path: Path):
    """A checkpoint saved before ``adapter_placement`` existed loads into the network
    its plan (also without the field) rebuilds."""
    old_plan = {"method": "adapter", "parts": ["encoder", "decoder"]}
    model = apply_peft(build("mobile_sam"), PeftConfig.from_dict(old_plan))
    train_steps(model)
    path = tmp_path / "trained.pt"
    save_trained(model, path, BASE)
    payload = torch.load(path, weights_only=True)
    del payload["peft"]["adapter_placement"]
    torch.save(payload, path)
    fresh = apply_peft(build("mobile_sam"), PeftConfig.from_dict(old_plan))
    load_trained(fresh, path, BASE)
    assert torch.equal(output(fresh), output(model))


# --- training: frozen stays frozen, merge ---------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"method": "lora", "parts": ("encoder", "decoder")},
        {"method": "adapter", "parts": ("encoder", "decoder"), "encoder_blocks": (-1,)},
        {"method": "full", "parts": ("decoder",)},
    ],
)
@pytest.mark.parametrize("backbone", ["sam_vit_b", "mobile_sam"])
def test_frozen_tensors_never_change_under_adamw(backbone, fields):
    model = adapted(backbone, **fields)
    trainable = trainable_names(model)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    train_steps(model)
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    # Frozen parameters and frozen BatchNorm statistics (TinyViT) stay bit-identical.
    assert changed <= trainable
    assert "class_head.weight" in changed
    assert any(re.search(r"lora_b|adapter\.up|mask_decoder", n) for n in changed)


def test_merged_lora_gives_the_same_output():
    model = adapted(
        "mobile_sam",
        method="lora",
        parts=("encoder", "decoder"),
        lora_targets=("encoder_attention", "encoder_mlp", "decoder_attention"),
        lora_rank=2,
        lora_alpha=8.0,
    )
    train_steps(model)
    assert any(
        m.lora_b.weight.abs().max() > 0
        for m in model.modules()
        if isinstance(m, LoRALinear)
    )
    trained = output(model)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(build("mobile_sam").state_dict())
    torch.testing.assert_close(output(model), trained, atol=1e-5, rtol=0)


def test_applying_twice_is_refused():
    for method in ("full", "lora"):
        model = adapted("sam_vit_b", method=method)
        with pytest.raises(SamnetError, match="already applied"):
            apply_peft(model, PeftConfig(method=method))


# --- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        PeftConfig(),
        PeftConfig(
            method="lora",
            parts=("encoder", "decoder"),
            lora_rank=8,
            lora_alpha=16.0,
            lora_dropout=0.1,
            lora_targets=("encoder_attention", "encoder_mlp"),
            encoder_blocks=(-2, -1),
            trainable_extra=("class_head", "input_adapter"),
        ),
        PeftConfig(method="adapter", parts=("decoder",), adapter_ratio=0.5),
        PeftConfig(
            method="full", parts=("encoder", "decoder"), full_parts=("prompt_encoder",)
        ),
    ],
)
def test_config_round_trips_through_json(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert PeftConfig.from_dict(data) == config
    assert isinstance(data["parts"], list)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"method": "qlora"}, "method 'qlora'"),
        ({"parts": ("neck",)}, "'neck' is not one of"),
        ({"parts": ("decoder",), "full_parts": ("decoder",)}, "overlap"),
        ({"method": "lora", "parts": ("prompt_encoder",)}, "use full_parts"),
        ({"method": "lora", "lora_targets": ("encoder_mlp",)}, "no lora_targets"),
        ({"method": "lora", "lora_rank": 0}, "lora_rank"),
        ({"method": "full", "encoder_blocks": (0,)}, "no LoRA or adapter"),
        ({"method": "adapter", "adapter_ratio": 0.0}, "adapter_ratio"),
        ({"adapter_placement": "parallel"}, "adapter_placement 'parallel'"),
    ],
)
def test_bad_config_is_a_clear_error(fields, problem):
    with pytest.raises(SamnetError, match=re.escape(problem)):
        PeftConfig(**fields)


def test_unknown_config_key_names_the_plans_file():
    with pytest.raises(
        SamnetError, match=r"nnUNetPlans.json: PEFT config: unknown keys \['rank'\]"
    ):
        PeftConfig.from_dict({"rank": 4}, source="nnUNetPlans.json")


def test_extra_pattern_must_match_something():
    with pytest.raises(SamnetError, match="'head' matches no module"):
        adapted("sam_vit_b", trainable_extra=("head",))
    model = adapted(
        "sam_vit_b", method="frozen", trainable_extra=("*.no_mask_embed.weight",)
    )
    assert trainable_names(model) == {"prompt_encoder.no_mask_embed.weight"}


def test_missing_part_is_a_clear_error():
    with pytest.raises(SamnetError, match="'image_encoder' module"):
        apply_peft(nn.Sequential(nn.Linear(2, 2)), PeftConfig(parts=("encoder",)))


def test_parameter_report():
    assert str(ParameterCount(410_000, 9_800_000)) == "trainable 0.41M / 9.80M (4.2%)"
    model = adapted("sam_vit_b", method="full", parts=("decoder",))
    count = count_parameters(model)
    decoder = sum(p.numel() for p in model.mask_decoder.parameters())
    assert count.trainable == decoder + 3 * DIM
    assert count.total == sum(p.numel() for p in model.parameters())


# --- trained checkpoints --------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"method": "lora", "parts": ("encoder", "decoder")},
        # Trained BatchNorm statistics travel with the trained weights.
        {"method": "full", "parts": ("encoder",)},
    ],
)
def test_trained_checkpoint_restores_the_trained_model(tmp_path: Path, fields):
    model = adapted("mobile_sam", **fields)
    train_steps(model)
    path = tmp_path / "fold_0" / "trained.pt"
    save_trained(model, path, BASE)
    assert [p.name for p in path.parent.iterdir()] == ["trained.pt"]
    fresh = adapted("mobile_sam", **fields)
    load_trained(fresh, path, BASE)
    assert torch.equal(output(fresh), output(model))


def test_lora_checkpoint_is_a_small_fraction_of_the_model(tmp_path: Path):
    model = adapted(
        "sam_vit_b",
        method="lora",
        parts=("encoder",),
        lora_targets=("encoder_attention",),
        lora_rank=1,
    )
    save_trained(model, tmp_path / "lora.pt", BASE)
    torch.save(build("sam_vit_b").state_dict(), tmp_path / "full.pt")
    ratio = (tmp_path / "lora.pt").stat().st_size / (
        tmp_path / "full.pt"
    ).stat().st_size
    assert ratio < 0.05


def test_checkpoint_of_other_base_weights_is_refused(tmp_path: Path):
    model = adapted("sam_vit_b", method="lora", parts=("decoder",))
    save_trained(model, tmp_path / "trained.pt", BASE)
    other = dict(BASE, sha256="b" * 64)
    with pytest.raises(SamnetError, match="sha256") as error:
        load_trained(
            adapted("sam_vit_b", method="lora", parts=("decoder",)),
            tmp_path / "trained.pt",
            other,
        )
    assert error.value.path == tmp_path / "trained.pt"


def test_checkpoint_of_other_peft_config_is_refused(tmp_path: Path):
    save_trained(
        adapted("sam_vit_b", method="lora", parts=("decoder",)), tmp_path / "t.pt", BASE
    )
    other = adapted("sam_vit_b", method="lora", parts=("decoder",), lora_alpha=8.0)
    with pytest.raises(SamnetError, match="PEFT config"):
        load_trained(other, tmp_path / "t.pt", BASE)


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path):
    path = tmp_path / "trained.pt"
    save_trained(adapted("sam_vit_b", method="adapter", parts=("decoder",)), path, BASE)
    payload = torch.load(path, weights_only=True)
    name = min(payload["state"])
    payload["state"]["mask_decoder.extra"] = payload["state"].pop(name)
    torch.save(payload, path)
    model = adapted("sam_vit_b", method="adapter", parts=("decoder",))
    with pytest.raises(SamnetError, match=f"lacks trained tensors {re.escape(name)}"):
        load_trained(model, path, BASE)
    payload["state"][name] = payload["state"]["mask_decoder.extra"]
    torch.save(payload, path)
    with pytest.raises(SamnetError, match=r"does not train mask_decoder\.extra"):
        load_trained(model, path, BASE)


def test_unreadable_or_absent_checkpoint_is_a_clear_error(tmp_path: Path):
    model = adapted("sam_vit_b")
    with pytest.raises(SamnetError, match="no trained checkpoint"):
        load_trained(model, tmp_path / "absent.pt", BASE)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SamnetError, match="unreadable"):
        load_trained(model, tmp_path / "junk.pt", BASE)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    path = tmp_path / "trained.pt"
    save_trained(adapted("sam_vit_b"), path, BASE)
    previous = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_trained(adapted("sam_vit_b"), path, BASE)
    assert path.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["trained.pt"]
