"""Gu et al. 2024's 18 fine-tuning strategies, each reached from the command line's
options and trained a few steps by the trainer the pipeline gives its plan.

The grid: 3 backbones (SAM ViT-B, MobileSAM, MedSAM ViT-B; LiteMedSAM's six cells too)
x {decoder, encoder+decoder} x {full, adapter, LoRA}. For each cell the real planner
plans what ``samnet_plan --backbone B --peft M --peft-parts P`` passes it, for a laptop;
the SAM trainer ``sam_method`` picks for that plan (``nnUNetTrainerSAM`` when the encoder
runs, ``nnUNetTrainerSAMCached`` for a cached encoder or encoder prefix) is built from
plans holding it and initialised as nnU-Net does (network from the plan through
``build_network_architecture``, AdamW over what trains, nnU-Net's loss); then nnU-Net's
own ``train_step`` runs on batches shaped as that trainer's loader yields them: images,
or ``EncodedImages`` of the frozen encoder (or prefix) output as its embedding cache
holds it (building the cache from preprocessed data is ``test_embedding_cache``'s).

The backbones are tiny: each registry entry is replaced by one whose builder makes the
same architecture at toy width (segment-anything's ``ImageEncoderViT``, samnet's
``TinyViT``), loaded from a weight file as real weights are; its costs, and so the plan,
are the real backbone's.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import pytest
import torch
from helpers import decision, fingerprint, plan, sam_around, tiny_sam
from segment_anything.modeling import (
    Sam,
)
from torch import nn

from samnet.cli.options import OVERRIDE_OPTIONS, overrides_from
from samnet.cli.plan import BUDGET_OPTIONS, parse_arguments
from samnet.core.errors import SamnetError
from samnet.core.methods import sam_method
from samnet.models.backbones import BACKBONES
from samnet.models.encoder_prefix import (
    encoder_stages,
    frozen_prefix_stages,
    split_image_encoder,
)
from samnet.models.network import EncodedImages
from samnet.models.peft import transformer_blocks
from samnet.models.tiny_vit import TinyViT
from samnet.models.trained_checkpoint import trained_state
from samnet.planners.modes import MODES_FOR_PEFT
from samnet.planners.planner import PlanResult
from samnet.planners.sam_planner import NETWORK_CLASS
from samnet.trainers.cached_trainer import nnUNetTrainerSAMCached
from samnet.trainers.sam_trainer import nnUNetTrainerSAM

# Gu et al.'s three, and LiteMedSAM (samnet's default; TinyViT with a prefix cache).
STUDY_BACKBONES = ("sam_vit_b", "mobile_sam", "medsam_vit_b", "lite_medsam")
PARTS = {"decoder": ("decoder",), "encoder+decoder": ("encoder", "decoder")}
TRAINERS = {cls.__name__: cls for cls in (nnUNetTrainerSAM, nnUNetTrainerSAMCached)}
DATASET = "Dataset777_GuGrid"
CONFIGURATION = "sam_2d"
DIM = 32  # toy width of encoder output and decoder
NATIVE_GRID = 64  # the embedding grid of every backbone at its native size
# Decoder parts only SAM's prompted path runs (the prompt-free ClassHead brings its own
# tokens and hypernetworks): trained with the decoder, but no loss reaches them here.
PROMPTED_PATH_ONLY = re.compile(
    r"^sam\.mask_decoder\.(iou_token|mask_tokens|output_hypernetworks_mlps|iou_prediction_head)\."
)
NEW_MODULES = re.compile(r"\.(lora_[ab]|adapter|parallel_adapter)\.")


def toy_vit_sam() -> Sam:
    """SAM ViT-B's modules: 4 blocks (the last 3 are its ``prefix_cached`` stage)."""
    return tiny_sam(NATIVE_GRID * 16, patch=16, dim=DIM, depth=4)


def toy_tiny_vit_sam(native: int, patch_kernel_size: int, patch_stride: int) -> Sam:
    """TinyViT as MobileSAM (stride 16) or LiteMedSAM (stride 4) have it: a
    convolutional stage, then 1, 1, 2 blocks (the last 2 their ``prefix_cached`` stage)."""
    encoder = TinyViT(
        native,
        embed_dims=(8, 16, 16, 24),
        depths=(1, 1, 1, 2),
        num_heads=(1, 1, 2),
        window_sizes=(4, 4, 4),
        patch_kernel_size=patch_kernel_size,
        patch_stride=patch_stride,
        out_chans=DIM,
    )
    return sam_around(encoder, native, NATIVE_GRID, DIM)


TOY_BUILDERS = {
    "sam_vit_b": toy_vit_sam,
    "medsam_vit_b": toy_vit_sam,
    "mobile_sam": functools.partial(toy_tiny_vit_sam, 1024, 3, 2),
    "lite_medsam": functools.partial(toy_tiny_vit_sam, 256, 1, 1),
}


@pytest.fixture
def toy_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Registers the toy version of a backbone; returns its weight file."""
    for variable in ("nnUNet_results", "nnUNet_preprocessed"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    # nnU-Net picks its dataset class from the preprocessed files' ending.
    data = tmp_path / "nnUNet_preprocessed" / DATASET / "data"
    data.mkdir(parents=True)
    (data / "case_0.b2nd").touch()

    def register(name: str) -> Path:
        build = TOY_BUILDERS[name]
        spec = dataclasses.replace(
            BACKBONES[name], build=build, sha256=None, bundled_file=None
        )
        monkeypatch.setitem(BACKBONES, name, spec)
        weights = tmp_path / f"toy_{name}.pth"
        torch.save(build().state_dict(), weights)
        return weights

    return register


def cli_overrides(*options: str) -> dict:
    """The overrides ``samnet_plan Dataset004 options`` gives the planner."""
    arguments = parse_arguments(["Dataset004", *options])
    return overrides_from(arguments, (*OVERRIDE_OPTIONS, *BUDGET_OPTIONS))


def trainer_for(result: PlanResult) -> nnUNetTrainerSAM:
    """The initialised trainer of plans whose sam_2d is ``result`` (as SAMPlanner writes
    it: nnU-Net's 2d configuration with SAM's patch, batch and ``sam`` block)."""
    sam = result.sam.to_dict()
    configuration = {
        "data_identifier": "data",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": result.batch_size,
        "patch_size": list(result.patch_size),
        "median_image_size_in_voxels": list(result.patch_size),
        "spacing": list(result.sam.in_plane_spacing),
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "batch_dice": True,
        "architecture": {
            "network_class_name": NETWORK_CLASS,
            "arch_kwargs": {},
            "_kw_requires_import": [],
        },
        "sam": sam,
    }
    plans = {
        "dataset_name": DATASET,
        "plans_name": "samnetPlans",
        "configurations": {CONFIGURATION: configuration},
        "label_manager": "LabelManager",
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "continue_training": False,
    }
    dataset_json = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "anterior": 1, "posterior": 2},
        "numTraining": 5,
        "file_ending": ".nii.gz",
    }
    method = sam_method("samnetPlans", CONFIGURATION, sam)
    trainer = TRAINERS[method.trainer](
        plans, CONFIGURATION, 0, dataset_json, torch.device("cpu")
    )
    trainer.initialize()
    return trainer


def loader_batch(
    trainer: nnUNetTrainerSAM, images: torch.Tensor, target: torch.Tensor
) -> dict:
    """A batch as ``trainer``'s loader yields it: images, or for the cached trainer the
    frozen encoder front's output, computed as its embedding cache computes it (and the
    images, which the cache then stores, for a plan with an image branch)."""
    if not isinstance(trainer, nnUNetTrainerSAMCached):
        return {"data": images, "target": target}
    network = trainer.sam_network
    encoder = network.sam.image_encoder
    stages = frozen_prefix_stages(encoder)
    prefix_stages = None if stages == len(encoder_stages(encoder)) else stages
    front = (
        encoder if prefix_stages is None else split_image_encoder(encoder, stages)[0]
    )
    with torch.no_grad():
        features = front(network.input_adapter(images))
    data = EncodedImages(
        features,
        tuple(images.shape[-2:]),
        prefix_stages,
        images=images if trainer.sam_plan.image_branch else None,
    )
    return {"data": data, "target": target}


@pytest.mark.parametrize("method", ["full", "adapter", "lora"])
@pytest.mark.parametrize("parts", ["decoder", "encoder+decoder"])
@pytest.mark.parametrize("backbone", STUDY_BACKBONES)
def test_each_strategy_plans_and_trains_what_it_names(
    toy_backbone, backbone: str, parts: str, method: str
) -> None:
    weights = toy_backbone(backbone)
    # 64 px keeps the steps short; the planner picks the same encoder modes at 128.
    options = ["--backbone", backbone, "--checkpoint", str(weights)]
    options += ["--input-size", "64", "--peft", method, "--peft-parts", parts]
    result = plan(fingerprint(), **cli_overrides(*options))
    peft = result.sam.peft
    assert (peft["method"], tuple(peft["parts"])) == (method, PARTS[parts])
    assert result.sam.encoder_mode in MODES_FOR_PEFT[(method, parts)]

    torch.manual_seed(0)
    trainer = trainer_for(result)
    network = trainer.sam_network
    parameters = dict(network.named_parameters())
    trainable = {name for name, p in parameters.items() if p.requires_grad}
    assert_trains_what_it_names(network, trainable, method, PARTS[parts], peft)

    # Everything but what training changes (trained parameters, statistics of trained
    # BatchNorm layers) stays bit-identical.
    changing = set(trained_state(network))
    frozen = {
        name: tensor.clone()
        for name, tensor in network.state_dict().items()
        if name not in changing
    }
    before = {name: parameters[name].detach().clone() for name in trainable}
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(1, 1, *result.patch_size, generator=generator)
    target = torch.randint(0, 3, (1, 1, *result.patch_size), generator=generator)
    trainer.on_train_epoch_start()
    # Two steps: a zero-initialised LoRA B or adapter up-projection passes no gradient to
    # the layer before it until the first step has moved it.
    losses = [
        float(trainer.train_step(loader_batch(trainer, images, target.float()))["loss"])
        for _ in range(2)
    ]
    assert all(torch.isfinite(torch.tensor(losses)))

    reached = {
        name
        for name in trainable
        if parameters[name].grad is not None and parameters[name].grad.abs().sum() > 0
    }
    expected = {name for name in trainable if not PROMPTED_PATH_ONLY.match(name)}
    assert reached == expected
    assert all(p.grad is None for n, p in parameters.items() if n not in trainable)
    after = network.state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in frozen.items())
    assert all(not torch.equal(parameters[n], before[n]) for n in reached)


def assert_trains_what_it_names(
    network: nn.Module,
    trainable: set[str],
    method: str,
    parts: tuple[str, ...],
    peft: dict,
) -> None:
    """Only the strategy's parameters train: every weight of its parts (full), or only
    the LoRA or adapter weights inside them (in the planned encoder blocks)."""
    assert "class_head.class_tokens" in trainable
    assert not any(name.startswith("sam.prompt_encoder.") for name in trainable)
    for part, prefix in (
        ("encoder", "sam.image_encoder."),
        ("decoder", "sam.mask_decoder."),
    ):
        names = {n for n, _ in network.named_parameters() if n.startswith(prefix)}
        in_part = names & trainable
        if part not in parts:
            assert not in_part, f"the frozen {part} trains"
        elif method == "full":
            assert in_part == names
        else:
            new = {n for n in names if NEW_MODULES.search(n)}
            assert new and in_part == new
    if method != "full" and "encoder" in parts:
        blocks = transformer_blocks(network.sam.image_encoder)
        adapted = [
            index
            for index, (name, _) in enumerate(blocks)
            if any(
                t.startswith(f"sam.image_encoder.{name}.") and NEW_MODULES.search(t)
                for t in trainable
            )
        ]
        chosen = peft["encoder_blocks"]
        expected = (
            range(len(blocks)) if chosen is None else [i % len(blocks) for i in chosen]
        )
        assert adapted == sorted(expected)


@pytest.mark.parametrize(
    ("options", "mode"),
    [
        (("--peft-parts", "decoder"), "cached"),
        (("--peft", "lora", "--encoder-mode", "prefix_cached"), "prefix_cached"),
        (("--peft", "lora", "--encoder-mode", "trained"), "trained"),
    ],
)
def test_the_image_branch_trains_in_every_encoder_mode_and_predicts_alike(
    toy_backbone, options: tuple[str, ...], mode: str
) -> None:
    weights = toy_backbone("lite_medsam")
    options = (*options, "--backbone", "lite_medsam", "--checkpoint", str(weights))
    asked = cli_overrides(*options, "--input-size", "64", "--image-branch", "yes")
    result = plan(fingerprint(), **asked)
    assert (result.sam.encoder_mode, result.sam.image_branch) == (mode, True)
    torch.manual_seed(0)
    trainer = trainer_for(result)
    network = trainer.sam_network
    branch = network.image_branch
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 1, *result.patch_size, generator=generator)
    target = torch.randint(0, 3, (2, 1, *result.patch_size), generator=generator)
    trainer.on_train_epoch_start()
    # Two steps: the zero output convolution passes no gradient back until it has moved.
    for _ in range(2):
        trainer.train_step(loader_batch(trainer, images, target.float()))
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters()
    )
    assert branch.out.weight.abs().sum() > 0
    # nnU-Net's predictor rebuilds the network from the plan and loads the checkpoint's
    # trained-only state: the same logits as the trainer's network.
    rebuilt = type(trainer).build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 1, 3
    )
    rebuilt.load_state_dict(network.trained_state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(images), network.eval()(images))


# --- the options that reach the strategies --------------------------------------------


def test_peft_decoder_is_the_full_decoder_on_a_cached_encoder() -> None:
    alias = plan(fingerprint(), **cli_overrides("--peft", "decoder"))
    spelled = plan(
        fingerprint(), **cli_overrides("--peft", "full", "--peft-parts", "decoder")
    )
    assert alias.sam.peft == spelled.sam.peft
    assert alias.sam.encoder_mode == spelled.sam.encoder_mode == "cached"
    assert (alias.sam.peft["method"], alias.sam.peft["parts"]) == ("full", ["decoder"])


@pytest.mark.parametrize(
    ("parts", "method", "mode"),
    [("decoder", "full", "cached"), ("encoder+decoder", "lora", "prefix_cached")],
)
def test_peft_parts_alone_takes_the_planners_method(parts, method, mode) -> None:
    result = plan(fingerprint(), **cli_overrides("--peft-parts", parts))
    assert result.sam.peft["method"] == method
    assert result.sam.encoder_mode == mode


def test_method_options_reach_the_plan() -> None:
    lora = plan(
        fingerprint(),
        **cli_overrides(
            "--backbone", "sam_vit_b", "--peft", "lora", "--encoder-mode", "trained",
            "--lora-rank", "8", "--encoder-blocks", "0,1,10,11",
            "--lora-targets", "encoder_attention, encoder_mlp,decoder_attention",
        ),
    )  # fmt: skip
    peft = lora.sam.peft
    assert (peft["lora_rank"], peft["encoder_blocks"]) == (8, [0, 1, 10, 11])
    assert peft["lora_targets"] == [
        "encoder_attention",
        "encoder_mlp",
        "decoder_attention",
    ]
    assert decision(lora, "peft")["because"].startswith(
        "set by the user (--peft lora --lora-rank 8 --lora-targets "
        "encoder_attention,encoder_mlp,decoder_attention --encoder-blocks 0,1,10,11)"
    )
    adapter = plan(
        fingerprint(),
        **cli_overrides(
            "--peft", "adapter", "--peft-parts", "decoder",
            "--adapter-placement", "sequential_mlp", "--adapter-ratio", "0.5",
        ),
    )  # fmt: skip
    peft = adapter.sam.peft
    assert (peft["adapter_placement"], peft["adapter_ratio"]) == ("sequential_mlp", 0.5)
    assert adapter.sam.encoder_mode == "cached"
    default = plan(fingerprint(), peft="adapter", encoder_blocks="last1")
    assert default.sam.peft["adapter_placement"] == "attention_and_parallel_mlp"
    assert default.sam.peft["encoder_blocks"] == [-1]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (
            {"peft": "decoder", "peft_parts": "encoder+decoder"},
            "--peft decoder trains the decoder alone",
        ),
        ({"peft": "lora", "encoder_mode": "cached"}, "cannot train --peft lora"),
        (
            {"peft_parts": "decoder", "encoder_mode": "trained"},
            "cannot train --peft-parts decoder",
        ),
        (
            {"peft": "lora", "adapter_placement": "sequential_mlp"},
            "configures adapter, but the plan trains lora",
        ),
        ({"lora_rank": 8, "peft_parts": "decoder"}, "configures lora"),
        (
            {"peft": "lora", "peft_parts": "decoder", "lora_targets": "encoder_mlp"},
            "--lora-targets encoder_mlp lie outside",
        ),
        (
            {"peft": "adapter", "peft_parts": "decoder", "encoder_blocks": "last2"},
            "picks the encoder blocks",
        ),
        ({"peft": "full", "encoder_blocks": "last2"}, "picks the encoder blocks"),
        (
            {"peft": "lora", "encoder_mode": "trained", "encoder_blocks": "10,12"},
            "encoder_blocks [12] do not exist: the encoder has 12",
        ),
        (
            {"peft": "lora", "encoder_mode": "prefix_cached", "encoder_blocks": "all"},
            "reaches before the last 3 of sam_vit_b's 12 encoder blocks",
        ),
        ({"peft": "lora", "encoder_blocks": "last"}, "--encoder-blocks 'last'"),
        (
            {"peft": "lora", "lora_targets": "decoder_mlp"},
            "--lora-targets 'decoder_mlp'",
        ),
    ],
)
def test_contradicting_or_bad_peft_options_are_clear_errors(overrides, problem):
    with pytest.raises(SamnetError, match=re.escape(problem)):
        plan(fingerprint(), backbone="sam_vit_b", **overrides)


def test_prefix_cached_takes_blocks_of_the_last_stage() -> None:
    result = plan(
        fingerprint(),
        backbone="sam_vit_b",
        peft="adapter",
        encoder_mode="prefix_cached",
        encoder_blocks="last2",
    )
    assert result.sam.peft["encoder_blocks"] == [-2, -1]


@pytest.mark.parametrize(
    "option",
    [
        ("--encoder-blocks", "last0"),
        ("--encoder-blocks", "1,1"),
        ("--lora-targets", "encoder_attention,encoder_attention"),
        ("--adapter-ratio", "0"),
        ("--peft-parts", "encoder"),
        ("--adapter-placement", "parallel"),
    ],
)
def test_the_command_line_refuses_malformed_peft_options(option, capsys) -> None:
    with pytest.raises(SystemExit):
        parse_arguments(["Dataset004", *option])
    assert option[0] in capsys.readouterr().err
