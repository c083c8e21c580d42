"""The SAM trainers' pieces: schedule, trained-only checkpoints, encoded input, frozen encoder.

End to end through nnU-Net (training, resume, validation, nnU-Net's CLI) is in
``test_plan_and_train.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import HIPPOCAMPUS_LIKE, plan
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from samnet.core.errors import SamnetError
from samnet.core.methods import FEW_SHOT_TRAINER, PROMPTED_TRAINER, SAM_TRAINERS
from samnet.models.encoder_prefix import split_image_encoder
from samnet.models.gradient_checkpointing import encoder_blocks, is_checkpointed
from samnet.models.lr_schedule import WarmupDecayLR, warmup_decay_factor
from samnet.models.network import (
    BASE_SHA256_KEY,
    EncodedImages,
    SamSegmentationNetwork,
    build_network,
)
from samnet.models.peft import PeftConfig, apply_peft
from samnet.trainers.cached_trainer import nnUNetTrainerSAMCached
from samnet.trainers.distributed import DistributedTrainerMixin
from samnet.trainers.fewshot_trainer import nnUNetTrainerSAMFewShot
from samnet.trainers.nnunet_lookup import samnet_trainers
from samnet.trainers.progress import EpochProgressMixin
from samnet.trainers.sam_trainer import network_from_plan, nnUNetTrainerSAM
from samnet.trainers.variants import training_variant

INPUT_SIZE = 64
PATCH = (40, 40)
# The plans' PEFT for the CPU (cached) and prefix-cached modes (planners/modes.py, peft_rule).
DECODER_ONLY = PeftConfig(
    method="full", parts=("decoder",), trainable_extra=("class_head",)
)
LAST_STAGE_LORA = PeftConfig(
    method="lora",
    parts=("encoder", "decoder"),
    encoder_blocks=(-2, -1),
    trainable_extra=("class_head",),
)


def adapted_network(
    config: PeftConfig, pretrained: bool = True
) -> SamSegmentationNetwork:
    """LiteMedSAM (real weights unless ``pretrained`` is False) for 1 channel, 3 classes."""
    network, _ = build_network("lite_medsam", 1, 3, INPUT_SIZE, pretrained=pretrained)
    return apply_peft(network, config)


def perturb_trained(network: torch.nn.Module, seed: int) -> None:
    """Stand-in for training: move every trained parameter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))


def test_warm_up_rises_then_cosine_decays_to_zero() -> None:
    factors = [warmup_decay_factor(step, 20, 2, "cosine") for step in range(21)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[2 + 9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 18)))
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))
    assert factors[20] == pytest.approx(0.0, abs=1e-12)
    assert warmup_decay_factor(11, 20, 2, "poly") == pytest.approx(0.5**0.9)
    with pytest.raises(ValueError, match="schedule"):
        warmup_decay_factor(0, 20, 2, "step")


def test_scheduler_sets_the_rate_of_the_epoch_nnunet_passes() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupDecayLR(optimizer, 1e-3, 10, 0.1, "cosine")
    scheduler.step(0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    scheduler.step(5)
    expected = 1e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 9))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_trained_state_loads_into_a_fresh_network_with_identical_output() -> None:
    trained = adapted_network(DECODER_ONLY)
    perturb_trained(trained, seed=0)
    state = trained.trained_state_dict()
    fresh = adapted_network(DECODER_ONLY)
    image = torch.randn(2, 1, *PATCH)
    with torch.no_grad():
        assert not torch.equal(fresh(image), trained(image))
        fresh.load_state_dict(state)
        assert torch.equal(fresh(image), trained(image))
    # Only the decoder side and the base identity: no encoder tensor is repeated.
    assert not any(name.startswith("sam.image_encoder") for name in state)
    assert len(bytes(state[BASE_SHA256_KEY].tolist())) == 32
    stored = sum(t.numel() for t in state.values())
    assert stored < 0.5 * sum(t.numel() for t in trained.state_dict().values())


def test_full_state_dicts_still_load_as_nn_module_does() -> None:
    source, target = adapted_network(DECODER_ONLY), adapted_network(DECODER_ONLY)
    perturb_trained(source, seed=1)
    target.load_state_dict(source.state_dict())
    image = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        assert torch.equal(target(image), source(image))


def test_trained_state_on_other_base_weights_is_refused() -> None:
    state = adapted_network(DECODER_ONLY).trained_state_dict()
    random_base = adapted_network(DECODER_ONLY, pretrained=False)
    with pytest.raises(SamnetError, match="trained on base weights with sha256"):
        random_base.load_state_dict(state)


def test_trained_state_of_another_peft_is_refused() -> None:
    state = adapted_network(DECODER_ONLY).trained_state_dict()
    with pytest.raises(SamnetError, match="does not fit this network"):
        adapted_network(LAST_STAGE_LORA).load_state_dict(state)


@pytest.mark.parametrize("config", [DECODER_ONLY, LAST_STAGE_LORA])
def test_encoded_images_give_the_logits_of_the_image(config: PeftConfig) -> None:
    """The cached path (embeddings or prefix output in) equals the uncached one exactly."""
    network = adapted_network(config)
    perturb_trained(network, seed=2)
    image = torch.randn(2, 1, *PATCH)
    encoder = network.sam.image_encoder
    with torch.no_grad():
        expected = network(image)
        if config is DECODER_ONLY:
            encoded = EncodedImages(network.encode(image), PATCH)
        else:
            prefix, _ = split_image_encoder(encoder, 3)
            cached = prefix(network.input_adapter(image))
            encoded = EncodedImages(cached, PATCH, prefix_stages=3)
        assert torch.equal(network(encoded), expected)


def test_a_frozen_encoder_runs_without_autograd() -> None:
    image = torch.randn(1, 1, *PATCH)
    frozen = adapted_network(DECODER_ONLY).encode(image)
    adapted = adapted_network(LAST_STAGE_LORA).encode(image)
    assert not frozen.requires_grad and adapted.requires_grad


def test_cpu_inference_uses_a_fast_copy_of_the_frozen_encoder_made_once() -> None:
    network = adapted_network(DECODER_ONLY).eval()
    image = torch.randn(2, 1, *PATCH)
    with torch.no_grad():
        reference = network.sam.image_encoder(network.input_adapter(image))
        fast = network.encode(image)
        assert network._inference_encoder, "eval + no_grad on CPU takes the fast path"
        assert (fast - reference).abs().max() <= 1e-4 * reference.abs().max()
        # nnU-Net's predictor moves the network to its device once per case.
        copy = network.fast_inference_encoder()
        assert network.to("cpu").fast_inference_encoder() is copy
        # An in-place update of the weights (as an optimizer step makes) is seen.
        network.sam.image_encoder.neck[0].weight.mul_(1.0)
        assert network.fast_inference_encoder() is not copy
        copy = network.fast_inference_encoder()
        # Loading weights must not leave a stale copy behind.
        state = network.state_dict()
        state["sam.image_encoder.neck.0.weight"] = torch.zeros_like(
            state["sam.image_encoder.neck.0.weight"]
        )
        network.load_state_dict(state)
        assert network.fast_inference_encoder() is not copy
        changed = network.encode(image)
        assert (changed - reference).abs().max() > 1e-2
    network.train()
    assert not network._inference_encoder
    with torch.no_grad():
        network.encode(image)
    assert not network._inference_encoder, "training mode runs the encoder itself"


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerSAMCached, nnUNetTrainer])
def test_a_training_variant_is_the_same_trainer_to_nnunet(trainer_class: type) -> None:
    """Same name and module (checkpoints name the trainer that predicts them); the
    progress bar in front, DDP right above nnUNetTrainer so the trainer's hooks run."""
    for distributed in (False, True):
        variant = training_variant(trainer_class, distributed)
        assert issubclass(variant, trainer_class)
        assert variant.__name__ == trainer_class.__name__
        assert variant.__module__ == trainer_class.__module__
        order = variant.__mro__
        assert order[1] is EpochProgressMixin
        assert (DistributedTrainerMixin in order) == distributed
        if distributed:
            assert (
                order.index(nnUNetTrainer) - order.index(DistributedTrainerMixin) == 1
            )


class EpochsOnly:
    """What ``EpochProgressMixin`` reads of nnU-Net's trainer."""

    num_epochs, current_epoch, configuration_name, fold = 4, 1, "sam_2d", 0

    def __init__(self, local_rank: int) -> None:
        self.local_rank = local_rank
        values = {"train_losses": 0.5, "mean_fg_dice": 0.25}
        self.logger = SimpleNamespace(get_value=lambda key, step: values[key])
        self.epochs_ended = 0

    def on_train_start(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        self.epochs_ended += 1

    def on_train_end(self) -> None:
        pass


def test_the_progress_bar_counts_epochs_from_where_training_resumes() -> None:
    trainer_class = type("nnUNetTrainerSAM", (EpochProgressMixin, EpochsOnly), {})
    trainer = trainer_class(local_rank=0)
    trainer.on_train_start()
    trainer.on_epoch_end()
    bar = trainer.epoch_bar
    assert trainer.epochs_ended == 1
    assert (bar.n, bar.total, bar.desc) == (2, 4, "sam_2d nnUNetTrainerSAM fold 0")
    assert bar.postfix == "pseudo_dice=0.250, train_loss=0.500"
    assert not bar.disable
    trainer.on_train_end()
    other_rank = trainer_class(local_rank=1)
    other_rank.on_train_start()
    assert other_rank.epoch_bar.disable


def trainer_classes() -> tuple[list[type], list[type]]:
    """samnet's trainer classes as nnU-Net's ``-tr`` finds them: the SAM trainers, and
    the nnU-Net trainers (nnU-Net's own and the support-slice baselines)."""
    exported = [getattr(samnet_trainers, name) for name in samnet_trainers.__all__]
    sam = [c for c in exported if issubclass(c, nnUNetTrainerSAM)]
    baselines = [nnUNetTrainer, *(c for c in exported if c not in sam)]
    return sam, baselines


def compiles(trainer_class: type, log: list[str]) -> bool:
    """``_do_i_compile`` of ``trainer_class`` as trained on a (simulated) CUDA device:
    the method reads the device and writes to the log only."""
    stand_in = SimpleNamespace(
        device=torch.device("cuda"), print_to_log_file=log.append
    )
    return trainer_class._do_i_compile(stand_in)


def test_no_sam_trainer_compiles_and_nnunet_baselines_still_do(monkeypatch) -> None:
    sam, baselines = trainer_classes()
    assert {c.__name__ for c in sam} == {
        *SAM_TRAINERS.values(),
        FEW_SHOT_TRAINER,
        PROMPTED_TRAINER,
    }
    monkeypatch.delenv("nnUNet_compile", raising=False)
    for trainer_class in sam:
        for trained in (trainer_class, training_variant(trainer_class, True)):
            assert compiles(trained, []) is False, trained
    # nnU-Net's own decision, unchanged: compile on CUDA by default.
    for trainer_class in baselines:
        assert trainer_class._do_i_compile is nnUNetTrainer._do_i_compile
        assert compiles(training_variant(trainer_class, False), []) is True
    # Asking nnU-Net to compile is said in the log, and refused for SAM alone.
    monkeypatch.setenv("nnUNet_compile", "1")
    log: list[str] = []
    assert compiles(nnUNetTrainerSAMFewShot, log) is False
    assert "torch.compile stays off for SAM trainers" in log[0]
    assert compiles(nnUNetTrainer, []) is True


@pytest.mark.parametrize("checkpointing", [True, False])
def test_the_network_checkpoints_the_encoder_as_the_plan_says(checkpointing) -> None:
    sam_plan = dataclasses.replace(
        plan(HIPPOCAMPUS_LIKE).sam, gradient_checkpointing=checkpointing
    )
    network = network_from_plan(sam_plan, 1, 3)
    blocks = encoder_blocks(network.sam.image_encoder)
    assert blocks and all(is_checkpointed(b) == checkpointing for b in blocks)
