"""The planner's open CPU choices settled on shared data: input size and encoder mode.

    nice -n 5 .venv/bin/python benchmarks/planner_ablation.py [--parts modes resolution] [--overwrite]

- ``modes``: seconds per optimizer step of the three encoder modes (cached: decoder on
  cached embeddings; prefix_cached: LoRA in the last TinyViT stage + decoder on the cached
  prefix; trained: LoRA in every encoder block + decoder, encoder in every step) with the
  PEFT the planner writes, on random batches of the plan's patch size, and the cached one
  at 256 px too; their FLOPs counted, next to what ``samnet.planners.cost_model.step_cost``
  predicts at this machine's matmul rate. Timed while other processes leave the CPU idle.
- ``resolution``: the CPU plan (frozen cached encoder, decoder trained) at 128 and at
  256 px on a Hippocampus subset (the first ``--cases`` labelled cases of
  Dataset004_Hippocampus as Dataset014_HippocampusSubset), fold 0, the same budget:
  validation Dice per class and per case, training, cache and validation seconds.

Each finished setting is written at once to benchmarks/results/planner_ablation_cpu.json
(atomically) and skipped when run again with the same settings, unless --overwrite (a
timing disturbed by other processes is measured again); interrupted training resumes
from its last epoch. Predictions are recomputed with the cost model in the code on every
run. A PNG beside the JSON shows the Dice and the step times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Self

import torch
from common import (
    RESULTS,
    SHARED_DATA,
    machine,
    plan_sam_variant,
    run_command,
    work_environment,
)
from torch.utils.flop_counter import FlopCounterMode

from samnet.core.atomic import atomic_folder
from samnet.core.datasets import Dataset
from samnet.core.layout import CACHE_FOLDER, CACHE_INFO_FILE, FOLD_STATS_FILE
from samnet.core.methods import Budget, Method
from samnet.core.paths import configure_environment, preprocessed_folder
from samnet.core.sam_plan import ENCODER_MODES
from samnet.models.backbones import get_backbone
from samnet.models.encoder_prefix import (
    encoder_stages,
    frozen_prefix_stages,
    split_image_encoder,
)
from samnet.models.network import EncodedImages, build_network
from samnet.models.peft import apply_peft, count_parameters, trainable_parameters
from samnet.planners import cost_model
from samnet.planners.hardware import Hardware, measure_matmul_gflops
from samnet.planners.modes import peft_rule

NAME = "planner_ablation_cpu"
RESULT = RESULTS / f"{NAME}.json"
SOURCE = "Dataset004_Hippocampus"
SUBSET_ID = 14
SUBSET = "Dataset014_HippocampusSubset"
BACKBONE = "lite_medsam"
INPUT_SIZES = (128, 256)
# Timed cheapest first.
TIMED_MODES = ENCODER_MODES[::-1]
CACHED_TRAINER = "nnUNetTrainerSAMCached"
CONFIGURATION = "sam_2d"
NOTES = (
    "The 2 cores are shared with other developers' jobs. Resolution runs: 1 torch thread "
    "(2 threads stall each other under contention); their seconds include that "
    "contention (other_processes_cpu_share_this_run), their Dice does not depend on it. "
    "Encoder-mode timings: torch's default threads, taken while other processes left the "
    "CPU idle (retried otherwise); measured = fastest of the timed steps. Predictions are "
    "recomputed on every run with the cost model in the code (constants under "
    "cost_model): for the timings at the fastest matmul rate measured between their "
    "steps (the host's rate drifts by up to 2x between minutes), for the resolution "
    "runs at the rate their plan measured."
)
COST_MODEL_CONSTANTS = (
    "FORWARD_BACKWARD",
    "ADAPTED_FORWARD_BACKWARD",
    "ACHIEVED_FRACTION",
    "CACHE_FRACTION",
    "DECODER_GFLOP",
)
# The benchmarked backbone's BackboneSpec fields the cost model reads.
BACKBONE_COST_FIELDS = ("encoder_gflop", "last_stage_share")
# A step timing during which other processes took more of the CPU than this is kept
# only until a quieter one replaces it (this and later runs of the script).
DISTURBED = 0.2
IMAGE_SUFFIX = "_0000.nii.gz"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("modes", "resolution"),
        default=["modes", "resolution"],
    )
    parser.add_argument(
        "--cases", type=int, default=30, help="labelled cases in the subset"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations-per-epoch", type=int, default=20)
    parser.add_argument("--val-iterations-per-epoch", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for planning and the resolution runs: on 2 cores shared with other "
        "work, 2 threads stall each other (measured here: 0.5 s per 128 px window "
        "with 1 thread, 1.2-1.8 s with 2)",
    )
    parser.add_argument("--timing-batch", type=int, default=8)
    parser.add_argument(
        "--timing-steps",
        type=int,
        default=5,
        help="timed steps after two warm-up steps (the second counts FLOPs)",
    )
    parser.add_argument("--timing-size", type=int, default=128)
    parser.add_argument(
        "--timing-threads",
        type=int,
        default=os.cpu_count(),
        help="torch threads for the step timings (default: every core, as a plan "
        "trains; the matmul rate of the prediction is measured with the same)",
    )
    parser.add_argument(
        "--timing-tries",
        type=int,
        default=3,
        help="timings of a mode until one is undisturbed by other processes",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=600,
        help="seconds to wait for other processes to leave the CPU before timing a mode",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="recompute finished settings"
    )
    return parser.parse_args()


def load_result() -> dict:
    return json.loads(RESULT.read_text()) if RESULT.exists() else {}


def save_result(result: dict) -> None:
    """Write the JSON atomically: a kill mid-write leaves the previous file."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result["machine"] = machine()
    temporary = RESULT.with_name(RESULT.name + ".partial")
    temporary.write_text(json.dumps(result, indent=2))
    temporary.replace(RESULT)
    print(f"wrote {RESULT}", flush=True)


def is_done(entry: dict | None, settings: dict, overwrite: bool) -> bool:
    return not overwrite and entry is not None and entry.get("settings") == settings


def make_subset(cases: int) -> dict:
    """Dataset014_HippocampusSubset: copies of the first ``cases`` labelled cases of Dataset004."""
    raw = Path(os.environ["nnUNet_raw"])
    source = raw / SOURCE
    if not source.exists():
        task = SHARED_DATA / "Task04_Hippocampus"
        run_command(
            [
                sys.executable,
                "-m",
                "samnet.cli.convert_msd",
                str(task),
            ],
            dict(os.environ),
        )
    images = sorted((source / "imagesTr").glob(f"*{IMAGE_SUFFIX}"))[:cases]
    identifiers = [image.name[: -len(IMAGE_SUFFIX)] for image in images]
    target = raw / SUBSET
    if target.exists():
        held = sorted(
            p.name[: -len(IMAGE_SUFFIX)]
            for p in (target / "imagesTr").glob(f"*{IMAGE_SUFFIX}")
        )
        if held != identifiers:
            sys.exit(
                f"{target} holds {len(held)} other cases than the first {cases}: delete it (and its preprocessed and results folders) and run again"
            )
    else:
        with atomic_folder(target) as folder:
            for sub in ("imagesTr", "labelsTr"):
                (folder / sub).mkdir()
            for identifier in identifiers:
                shutil.copy(
                    source / "imagesTr" / f"{identifier}{IMAGE_SUFFIX}",
                    folder / "imagesTr",
                )
                shutil.copy(
                    source / "labelsTr" / f"{identifier}.nii.gz", folder / "labelsTr"
                )
            description = json.loads((source / "dataset.json").read_text())
            description.update(
                numTraining=cases,
                name="HippocampusSubset",
                description=f"the first {cases} labelled cases of {SOURCE}, for benchmarks/planner_ablation.py",
            )
            (folder / "dataset.json").write_text(
                json.dumps(description, indent=4) + "\n"
            )
    return {
        "dataset": SUBSET,
        "source": f"{SOURCE} (MSD Task04_Hippocampus, {len(list((source / 'imagesTr').glob('*')))} labelled cases)",
        "cases": identifiers,
        "rule": f"the first {cases} labelled cases by sorted id",
    }


def plan_subset(size: int) -> str:
    """The CPU plan of the subset at ``size`` px, encoder cached, as its own plans file."""
    return plan_sam_variant(
        Dataset(SUBSET_ID, SUBSET),
        f"samnetPlans_{size}px",
        {"input_size": size, "encoder_mode": "cached"},
    )


def busy_cpu_seconds() -> float:
    """CPU seconds every process on this machine has used since boot (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class OtherLoad:
    """Share of the machine's CPU time that other processes took while the block ran.

    The cores are shared with other work; 0.5 on 2 cores means one core's worth was theirs.
    """

    def __enter__(self) -> Self:
        self.start = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds())
        return self

    def __exit__(self, *exception) -> None:
        wall, busy, own = (
            now - then
            for now, then in zip(
                (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()), self.start
            )
        )
        self.share = max(0.0, busy - own) / (wall * os.cpu_count())


def wait_for_quiet(limit_seconds: float, threshold: float = 0.15) -> float:
    """Wait (up to ``limit_seconds``) until other processes leave the CPU nearly idle for
    5 s, so step times are this machine's and not the neighbours'; the last share seen."""
    start = time.perf_counter()
    while True:
        with OtherLoad() as load:
            time.sleep(5)
        waited = time.perf_counter() - start
        if load.share <= threshold or waited > limit_seconds:
            if waited > 10:
                print(
                    f"  waited {waited:.0f} s; others use {load.share:.0%}", flush=True
                )
            return load.share


def time_encoder_mode(
    mode: str, size: int, patch: tuple[int, int], batch: int, steps: int, threads: int
) -> dict:
    """Seconds per optimizer step of ``mode`` as nnU-Net's train_step runs it (Dice + CE,
    AdamW, clipping), on random data, in a fresh process with ``threads`` torch threads.

    The matmul rate is measured before every step: the fastest step and the fastest rate
    are the least disturbed by other processes, and the prediction uses that rate.
    """
    # nnunetv2 reads nnUNet_* variables at import: main() sets them first.
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    peft, _ = peft_rule(mode, get_backbone(BACKBONE), {})
    network, _ = build_network(BACKBONE, 1, 3, image_size=size)
    apply_peft(network, peft)
    images = torch.randn(batch, 1, *patch)
    target = torch.randint(0, 3, (batch, 1, *patch))
    inputs = images
    if mode != "trained":
        encoder = network.sam.image_encoder
        stages = frozen_prefix_stages(encoder)
        front, prefix_stages = encoder, None
        if stages < len(encoder_stages(encoder)):
            front, _ = split_image_encoder(encoder, stages)
            prefix_stages = stages
        with torch.no_grad():
            features = front(network.input_adapter(images)).contiguous()
        inputs = EncodedImages(features, patch, prefix_stages)
    network.train()
    loss = DC_and_CE_loss(
        {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=None,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    optimizer = torch.optim.AdamW(trainable_parameters(network), lr=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        value = loss(network(inputs), target)
        value.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()

    step()
    with FlopCounterMode(display=False) as counter:
        step()
    seconds, rates = [], []
    with OtherLoad() as load:
        for _ in range(steps):
            rates.append(measure_matmul_gflops("cpu"))
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
    counted = counter.get_total_flops() / 1e9
    return {
        "peft": peft.to_dict(),
        "trainable_parameters": count_parameters(network).trainable,
        "input_shape": list(
            inputs.features.shape if isinstance(inputs, EncodedImages) else inputs.shape
        ),
        "seconds_per_step": seconds,
        "seconds_per_step_min": min(seconds),
        "seconds_per_step_median": statistics.median(seconds),
        "matmul_gflops_before_each_step": rates,
        "other_processes_cpu_share": load.share,
        "gflop_per_step_counted": counted,
        "achieved_fraction_of_matmul_rate": counted / min(seconds) / max(rates),
    }


def mode_prediction(entry: dict) -> dict:
    """What the cost model in the code predicts for a timed mode, at the fastest matmul
    rate measured between its steps."""
    settings = entry["settings"]
    rate = max(entry["matmul_gflops_before_each_step"])
    cost = cost_model.step_cost(
        get_backbone(BACKBONE),
        settings["input_size"],
        settings["encoder_mode"],
        Hardware("cpu", os.cpu_count(), 0.0, None, None, rate),
    )
    predicted = cost.seconds_per_slice * settings["batch_size"]
    return {
        "predicted_seconds_per_step": predicted,
        "measured_over_predicted": entry["seconds_per_step_min"] / predicted,
        # seconds x rate x achieved fraction: the step's GFLOP as the model counts them
        "gflop_per_step_cost_model": predicted * rate * cost_model.ACHIEVED_FRACTION,
    }


def resolution_prediction(run: dict) -> dict:
    """What the cost model in the code predicts for a resolution run, on the hardware
    its plan measured."""
    cost = cost_model.step_cost(
        get_backbone(BACKBONE),
        run["sam_plan"]["input_size"],
        run["sam_plan"]["encoder_mode"],
        Hardware(**run["planner_hardware"]),
    )
    return {
        "predicted_seconds_per_step": cost.seconds_per_slice
        * run["settings"]["budget"]["batch_size"],
        "predicted_cache_seconds_per_window": cost.cache_seconds_per_slice,
    }


def refresh_predictions(result: dict) -> None:
    """Predictions (not measurements) recomputed with the cost model in the code, whose
    constants (and the backbone's it reads) are recorded beside them."""
    for entry in result.get("encoder_modes", {}).values():
        entry.update(mode_prediction(entry))
    for run in result.get("resolution", {}).values():
        run.update(resolution_prediction(run))
    spec = get_backbone(BACKBONE)
    result["cost_model"] = {
        **{name: getattr(cost_model, name) for name in COST_MODEL_CONSTANTS},
        "backbone": {name: getattr(spec, name) for name in BACKBONE_COST_FIELDS},
    }


def plan_patch_size(plans_name: str) -> tuple[int, int]:
    plans = json.loads(
        (preprocessed_folder() / SUBSET / f"{plans_name}.json").read_text()
    )
    return tuple(plans["configurations"][CONFIGURATION]["patch_size"])


def run_encoder_modes(
    args: argparse.Namespace, result: dict, patch: tuple[int, int]
) -> None:
    """Every encoder mode at ``--timing-size``, and the cached one at each input size."""
    modes = result.setdefault("encoder_modes", {})
    runs = [(mode, args.timing_size) for mode in TIMED_MODES]
    runs += [("cached", size) for size in INPUT_SIZES if size != args.timing_size]
    context = multiprocessing.get_context("spawn")
    for mode, size in runs:
        name = f"{mode}_{size}px_{args.timing_threads}threads"
        settings = {
            "encoder_mode": mode,
            "input_size": size,
            "patch_size": list(patch),
            "batch_size": args.timing_batch,
            "torch_threads": args.timing_threads,
            "timed_steps": args.timing_steps,
            "warm_up_steps": 2,
        }
        best = modes.get(name)
        if is_done(best, settings, args.overwrite):
            if best["other_processes_cpu_share"] <= DISTURBED:
                print(f"{name}: done", flush=True)
                continue
        else:
            best = None
        for attempt in range(1, args.timing_tries + 1):
            print(
                f"{name}: {args.timing_steps} steps of batch {args.timing_batch} (try {attempt})",
                flush=True,
            )
            others_before = wait_for_quiet(args.quiet_wait)
            with context.Pool(1) as pool:
                entry = pool.apply(
                    time_encoder_mode,
                    (
                        mode,
                        size,
                        patch,
                        args.timing_batch,
                        args.timing_steps,
                        args.timing_threads,
                    ),
                )
            entry.update(mode_prediction({"settings": settings, **entry}))
            print(
                f"  {entry['seconds_per_step_min']:.2f} s/step (fastest; median {entry['seconds_per_step_median']:.2f}), "
                f"{entry['predicted_seconds_per_step']:.2f} predicted (x{entry['measured_over_predicted']:.2f}); "
                f"{entry['gflop_per_step_counted']:.0f} GFLOP counted, {entry['gflop_per_step_cost_model']:.0f} in the model; "
                f"others used {entry['other_processes_cpu_share']:.0%} of the CPU",
                flush=True,
            )
            share = entry["other_processes_cpu_share"]
            if best is None or share < best["other_processes_cpu_share"]:
                best = {
                    "settings": settings,
                    "other_processes_cpu_share_before": others_before,
                    **entry,
                }
                modes[name] = best
                save_result(result)
            if share <= DISTURBED:
                break


def cache_info(size: int) -> dict:
    """cache.json of the subset's whole-encoder cache at ``size`` px."""
    for info_file in (preprocessed_folder() / SUBSET / CACHE_FOLDER).glob(
        f"*/{CACHE_INFO_FILE}"
    ):
        info = json.loads(info_file.read_text())
        key = info["key_inputs"]
        if key["input_size"] == size and key["prefix_stages"] is None:
            return info
    raise FileNotFoundError(f"no {size} px embedding cache of {SUBSET}")


def train_resolution(size: int, budget, retrain: bool) -> dict:
    """Train and validate the cached CPU plan at ``size`` px on fold 0; its numbers."""
    # nnunetv2 reads nnUNet_* variables at import: main() sets them first.
    from samnet.pipeline.train_fold import fold_folder, train_fold

    plans_name = plan_subset(size)
    method = Method(CACHED_TRAINER, plans_name, CONFIGURATION)
    with OtherLoad() as load:
        summary_file = train_fold(
            SUBSET, method, 0, budget, torch.device("cpu"), overwrite=retrain
        )
    summary = json.loads(summary_file.read_text())
    stats = json.loads((fold_folder(SUBSET, method, 0) / FOLD_STATS_FILE).read_text())
    base = preprocessed_folder() / SUBSET
    plans = json.loads((base / f"{plans_name}.json").read_text())
    labels = {
        str(v): k
        for k, v in json.loads((base / "dataset.json").read_text())["labels"].items()
    }
    info = cache_info(size)
    steps = budget.optimizer_steps
    per_case = {
        Path(case["reference_file"]).name.split(".")[0]: {
            labels[label]: metrics["Dice"] for label, metrics in case["metrics"].items()
        }
        for case in summary["metric_per_case"]
    }
    return {
        "method": method.folder_name,
        "sam_plan": {
            key: plans["configurations"][CONFIGURATION]["sam"][key]
            for key in ("input_size", "encoder_mode", "peft", "optimizer")
        },
        "patch_size": plans["configurations"][CONFIGURATION]["patch_size"],
        "dice": {
            labels[label]: metrics["Dice"] for label, metrics in summary["mean"].items()
        },
        "dice_mean_foreground": summary["foreground_mean"]["Dice"],
        "dice_per_case": per_case,
        "train_seconds": stats["train_seconds"],
        "seconds_per_step": stats["train_seconds"] / steps,
        "embedding_cache_seconds": info["build_seconds"],
        "embedding_cache_windows": info["windows"],
        "embedding_cache_seconds_per_window": info["build_seconds"] / info["windows"],
        "validation_seconds": stats["validation_seconds"],
        "other_processes_cpu_share_this_run": load.share,
        "trainable_parameters": stats["trainable_parameters"],
        "planner_hardware": plans["samnet"]["hardware"],
    }


def run_resolution(args: argparse.Namespace, result: dict) -> None:
    budget = Budget(
        args.epochs,
        args.iterations_per_epoch,
        args.val_iterations_per_epoch,
        args.batch_size,
    )
    settings = {
        "budget": dataclasses.asdict(budget),
        "optimizer_steps": budget.optimizer_steps,
        "fold": 0,
        "cases": args.cases,
        "torch_threads": args.threads,
    }
    runs = result.setdefault("resolution", {})
    for size in INPUT_SIZES:
        entry = runs.get(str(size))
        if is_done(entry, settings, args.overwrite):
            print(f"resolution {size} px: done", flush=True)
            continue
        retrain = args.overwrite or entry is not None
        print(
            f"resolution {size} px: {budget.epochs} epochs x {budget.iterations_per_epoch} steps, batch {budget.batch_size}",
            flush=True,
        )
        start = time.perf_counter()
        runs[str(size)] = {
            "settings": settings,
            **train_resolution(size, budget, retrain),
        }
        runs[str(size)]["wall_seconds_this_run"] = time.perf_counter() - start
        print(
            f"  Dice {runs[str(size)]['dice']} mean {runs[str(size)]['dice_mean_foreground']:.3f}",
            flush=True,
        )
        save_result(result)


def compare(result: dict) -> dict:
    """The numbers the planner's rules cite."""
    summary = {}
    runs = result.get("resolution", {})
    if all(str(size) in runs for size in INPUT_SIZES):
        small, large = runs["128"], runs["256"]
        cases = sorted(small["dice_per_case"])
        differences = [
            statistics.fmean(small["dice_per_case"][c].values())
            - statistics.fmean(large["dice_per_case"][c].values())
            for c in cases
        ]
        cost = {
            key: sum(
                run[part]
                for part in (
                    "train_seconds",
                    "embedding_cache_seconds",
                    "validation_seconds",
                )
            )
            for key, run in (("128", small), ("256", large))
        }
        summary["resolution"] = {
            "dice_mean_foreground_128": small["dice_mean_foreground"],
            "dice_mean_foreground_256": large["dice_mean_foreground"],
            "paired_case_difference_128_minus_256": {
                "mean": statistics.fmean(differences),
                "standard_error": statistics.stdev(differences)
                / len(differences) ** 0.5,
                "cases_128_better": sum(d > 0 for d in differences),
                "cases": len(differences),
            },
            "seconds_train_cache_validation_128": cost["128"],
            "seconds_train_cache_validation_256": cost["256"],
            "speedup_128_over_256": cost["256"] / cost["128"],
            "train_step_speedup_128_over_256": large["seconds_per_step"]
            / small["seconds_per_step"],
            "cache_speedup_128_over_256": large["embedding_cache_seconds_per_window"]
            / small["embedding_cache_seconds_per_window"],
        }
    if runs:
        summary["resolution_runs_measured_over_predicted"] = {
            size: {
                "seconds_per_step": run["seconds_per_step"]
                / run["predicted_seconds_per_step"],
                "cache_seconds_per_window": run["embedding_cache_seconds_per_window"]
                / run["predicted_cache_seconds_per_window"],
            }
            for size, run in runs.items()
        }
    modes = result.get("encoder_modes", {})
    if modes:
        summary["encoder_modes_measured_over_predicted"] = {
            mode: entry["measured_over_predicted"] for mode, entry in modes.items()
        }
    return summary


def plot(result: dict) -> None:
    # Only the plot needs matplotlib; its backend is chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, modes = result.get("resolution", {}), result.get("encoder_modes", {})
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if runs:
        names = list(next(iter(runs.values()))["dice"]) + ["mean"]
        width = 0.8 / len(runs)
        for index, (size, run) in enumerate(
            sorted(runs.items(), key=lambda item: int(item[0]))
        ):
            values = [*run["dice"].values(), run["dice_mean_foreground"]]
            seconds = (
                run["train_seconds"]
                + run["embedding_cache_seconds"]
                + run["validation_seconds"]
            )
            bars = left.bar(
                [x + index * width for x in range(len(names))],
                values,
                width,
                label=f"{size} px ({seconds / 60:.0f} min: cache+train+validation, 1 thread, shared CPU)",
            )
            left.bar_label(bars, fmt="%.3f", fontsize=8)
        left.set_xticks(
            [x + width * (len(runs) - 1) / 2 for x in range(len(names))], names
        )
        left.set_ylim(0, 1)
        left.set_ylabel("validation Dice (fold 0)")
        left.set_title(f"cached encoder, decoder trained: {SUBSET}")
        left.legend(loc="lower right", fontsize=8)
    if modes:
        names = list(modes)
        measured = [modes[m]["seconds_per_step_min"] for m in names]
        predicted = [modes[m]["predicted_seconds_per_step"] for m in names]
        positions = range(len(names))
        bars = right.bar(
            [x - 0.2 for x in positions], measured, 0.4, label="measured (fastest step)"
        )
        right.bar_label(bars, fmt="%.2f", fontsize=8)
        bars = right.bar(
            [x + 0.2 for x in positions], predicted, 0.4, label="cost model"
        )
        right.bar_label(bars, fmt="%.2f", fontsize=8)
        labels = [
            f"{modes[m]['settings']['encoder_mode']}\n{modes[m]['settings']['input_size']} px"
            for m in names
        ]
        right.set_xticks(list(positions), labels, fontsize=8)
        right.set_ylabel("seconds per optimizer step")
        batch = next(iter(modes.values()))["settings"]["batch_size"]
        right.set_title(f"encoder modes, batch {batch}, CPU: measured vs predicted")
        right.legend(fontsize=8)
    figure.tight_layout()
    path = RESULTS / f"{NAME}.png"
    figure.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    args = parse_arguments()
    os.environ.update(work_environment())
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    configure_environment()
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* variables at import: set them first.
    from samnet.pipeline.planning import plan_and_preprocess

    # This process plans and trains; the step timings run in fresh processes with
    # torch's default threads, as a plan would.
    torch.set_num_threads(args.threads)
    result = load_result()
    result.update(benchmark="planner_ablation", backbone=BACKBONE, notes=NOTES)
    result["subset"] = make_subset(args.cases)
    plan_and_preprocess(Dataset(SUBSET_ID, SUBSET), ["2d"])
    patch = plan_patch_size(plan_subset(INPUT_SIZES[0]))
    if "modes" in args.parts:
        run_encoder_modes(args, result, patch)
    if "resolution" in args.parts:
        run_resolution(args, result)
    refresh_predictions(result)
    result["comparison"] = compare(result)
    save_result(result)
    plot(result)


if __name__ == "__main__":
    main()
