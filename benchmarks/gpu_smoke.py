"""GPU smoke run: plan, briefly train and predict with SAM and nnU-Net 2d on one GPU.

Records each method's planned against measured peak memory and its seconds per step.

    .venv/bin/python benchmarks/gpu_smoke.py [--device cuda] [--dataset hippocampus]
        [--epochs 3 --iterations-per-epoch 25 --test-cases 10] [--busy "what else ran"]
        [--overwrite] [any samnet_plan override, e.g. --encoder-mode prefix_cached]

The CPU dry run (tests/e2e/test_gpu_smoke_dry_run.py runs it on samnet's synthetic demo dataset,
so no shared data is needed; 1-3 minutes on 2 cores, most of it planning):

    .venv/bin/python benchmarks/gpu_smoke.py --device cpu --dataset demo --epochs 1 \\
        --iterations-per-epoch 2 --batch-size 2 --test-cases 2 \\
        --input-size 64 --encoder-mode trained

What a first GPU user's ``samnet_plan_and_train`` does, fold 0 only, through samnet's
pipeline functions: ``plan_everything`` plans nnU-Net's 2d configuration and SAM's for
this machine's hardware (``--peft lora`` by default, so the planner puts LoRA in encoder
and decoder, encoder mode ``trained`` or ``prefix_cached`` by its time estimate) and
``fold_runs`` gives each method the batch the pipeline gives it; each method trains
``--epochs`` x ``--iterations-per-epoch`` steps with ``build_trainer`` (nnU-Net's own
loop, AMP and torch.compile as nnU-Net decides; no validation after training, which
would cost minutes of sliding windows and is not what this run measures) and predicts
the first ``--test-cases`` images of ``imagesTs`` with ``samnet.inference.run``. The
nnU-Net folders are ``benchmarks/work/gpu_smoke_<device>/`` (raw data shared with the
other benchmarks), so a CPU dry run's plan never serves a GPU run; plans found there are
kept, as the pipeline keeps them, unless ``--overwrite``.

Stages (``STAGES``), each guarded: a failure is recorded with its stage and error, the
stages that need it are marked skipped, the others still run, and the script exits 1.
``benchmarks/results/gpu_smoke_<device>.json`` is written after every stage: per training
stage the planned memory (``planned_memory``: the plan's modelled memory per sample x the
batch trained) against the measured peak (``torch.cuda.max_memory_allocated`` since the
stage began; on CPU only the process's peak RSS so far), seconds per step (epochs after
the first, which also compiles and starts the loader workers), AMP and torch.compile;
per prediction stage seconds per case and the peak memory.

Time on one H100/H200 (16 cores) with the defaults, against the 8 minutes this run must
fit (estimates: nothing of samnet has run on a GPU yet):

- setup and plan, about 1.5 min: converting Task04 (208 training, 52 test images), then
  nnU-Net's fingerprint, plans and 2d preprocessing and the SAM plan; nnU-Net's 2d and
  3d_fullres of these cases plan and preprocess in 32 s on 2 cores (NNUNET_NOTES), and
  samnet preprocesses with at most 2 processes on any machine.
- SAM, about 2.5 min: on an H200 samnet's planner gives SAM 90 slices of 256 px (0.64
  GB each under AMP by its cost model), and the cost model (about 50 TFLOP/s fp32 as
  ``detect_hardware`` measures it, x4 under AMP, x0.21 achieved) 3.8 ms per slice
  trained with LoRA: 0.34 s per step, 75 steps in 26 s, or 80 s if the model is 3x
  optimistic; the first epoch adds torch.compile and the start of 14 loader workers
  (allowed: 1.5 min). A batch the GPU cannot hold fails in seconds, recorded.
- nnU-Net 2d, about 1.5 min: 75 steps of its own plan (batch 292 of 56 x 40 patches)
  at well under 0.2 s each, plus torch.compile and the loader workers in the first
  epoch (1 min).
- predicting 10 test images with each, about 1 min: some 36 slices of one window each,
  x4 with test-time mirroring, one window at a time.

That is about 6.5 min, 1.5 min of margin.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from common import DATASETS, ensure_raw, machine, work_environment, write_result

from samnet.cli.options import add_override_arguments, overrides_from, positive_int
from samnet.core.datasets import Dataset

# nnunetv2, under samnet.pipeline, reads nnUNet_* at import: main() sets them first.
if TYPE_CHECKING:
    from samnet.pipeline.launchers import FoldRun

FOLD = 0
# The pipeline's names of the two methods (samnet.pipeline.options.METHOD_KINDS).
METHODS = ("sam", "nnunet")
STAGES = (
    "setup",
    "plan",
    *(f"{step}_{method}" for method in METHODS for step in ("train", "predict")),
)
# One validation batch per epoch: nnU-Net's pseudo Dice is not what this run measures.
VAL_ITERATIONS = 1
# Loader workers leave this many cores to the training process and its pin-memory thread.
CORES_KEPT = 2
TRACEBACK_LINES = 12
# Beside the trained models in nnUNet_results/DATASET/, one folder per model.
PREDICTIONS_FOLDER = "gpu_smoke_predictions"
LOG = logging.getLogger("gpu_smoke")
MB = 2**20


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--dataset",
        choices=("hippocampus", "demo"),
        default="hippocampus",
        help="Task04_Hippocampus from ../shared/data, or samnet's synthetic demo "
        "dataset written into nnUNet_raw (the CPU dry run)",
    )
    parser.add_argument(
        "--demo-cases",
        type=positive_int,
        default=6,
        help="training cases of the demo when it is written (one already in "
        "nnUNet_raw is kept)",
    )
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--iterations-per-epoch", type=positive_int, default=25)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="one batch for both methods (default: the batch the pipeline plans for each)",
    )
    parser.add_argument("--test-cases", type=positive_int, default=10)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="re-plan and re-preprocess (as samnet_plan_and_train --overwrite); needed "
        "when the plan overrides differ from the kept plan's",
    )
    parser.add_argument(
        "--fail-stage",
        choices=STAGES,
        help="fail this stage on purpose, to see that the failure is recorded, the "
        "stages that need it are skipped and the others still run",
    )
    parser.add_argument(
        "--busy",
        help="what else ran on the machine meanwhile (recorded); omit when nothing did",
    )
    add_override_arguments(parser)
    # PEFT in encoder and decoder: the planner puts LoRA in both unless told otherwise.
    parser.set_defaults(peft="lora")
    return parser.parse_args(argv)


def worker_processes(cores: int) -> dict[str, str]:
    """nnU-Net's worker processes for a machine with ``cores``: preprocessing and export
    on every core, data augmentation on all but ``CORES_KEPT``."""
    return {
        "nnUNet_def_n_proc": str(cores),
        "nnUNet_n_proc_DA": str(max(1, cores - CORES_KEPT)),
    }


class ForcedFailure(RuntimeError):
    """The failure ``--fail-stage`` asks for."""


@dataclass
class Smoke:
    """The result being written and the guard every stage runs under.

    Attributes:
      name: the results file's name (``write_result``).
      fail_stage: the stage that fails on purpose (``--fail-stage``), or None.
      result: what is written; ``stages`` holds one record per stage run so far.
    """

    name: str
    fail_stage: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def stage(
        self,
        stage: str,
        work: Callable[[dict], Any],
        needs: tuple[str, ...] = (),
    ) -> Any:
        """``work(record)``'s value, the stage's measurements in ``record``; None when it
        failed (its error recorded) or a stage it ``needs`` did not succeed (skipped).
        The result is written either way."""
        stages = self.result.setdefault("stages", {})
        failures = self.result.setdefault("failures", [])
        record = stages[stage] = {}
        failed = [name for name in needs if not stages[name]["ok"]]
        value = None
        start = time.perf_counter()
        if failed:
            record["skipped"] = f"needs {', '.join(failed)}, which did not succeed"
        else:
            print(f"gpu_smoke: {stage}", flush=True)
            try:
                if stage == self.fail_stage:
                    raise ForcedFailure(f"asked for with --fail-stage {stage}")
                value = work(record)
            except Exception as error:
                LOG.exception("gpu_smoke: stage %s failed", stage)
                record["error"] = f"{type(error).__name__}: {error}"
                record["traceback"] = traceback.format_exc().splitlines()[
                    -TRACEBACK_LINES:
                ]
                failures.append({"stage": stage, "error": record["error"]})
        record["ok"] = not failed and "error" not in record
        record["seconds"] = round(time.perf_counter() - start, 2)
        # What a failed stage held (a trainer, its network, its batches) goes before the next.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        write_result(self.name, self.result)
        return value

    @property
    def succeeded(self) -> bool:
        return all(record["ok"] for record in self.result["stages"].values())


def setup(record: dict, args: argparse.Namespace) -> Dataset:
    """The raw dataset in ``nnUNet_raw``, converted or written once."""
    if args.dataset == "demo":
        from samnet.preprocessing.intake.demo_dataset import (
            DEMO_ID,
            DEMO_NAME,
            write_demo_dataset,
        )
        from samnet.preprocessing.intake.raw_dataset import raw_dataset_target

        if not raw_dataset_target(DEMO_ID, DEMO_NAME).exists():
            write_demo_dataset(DEMO_ID, args.demo_cases, args.test_cases)
        dataset = Dataset.resolve(DEMO_ID)
    else:
        real = DATASETS[args.dataset]
        ensure_raw(real, dict(os.environ))
        dataset = Dataset.resolve(real.dataset)
    record["dataset"] = dataset.name
    return dataset


def plan(
    record: dict, dataset: Dataset, args: argparse.Namespace, overrides: dict
) -> dict[str, FoldRun]:
    """Plan and preprocess nnU-Net's 2d and SAM's configuration for ``args.device``, as
    ``samnet_plan_and_train`` does (plans already there are kept unless ``--overwrite``);
    the fold run of each of ``METHODS``, with the budget the pipeline gives it."""
    from samnet.core.methods import BASELINE_TRAINER
    from samnet.pipeline.options import BudgetOptions, PlanAndTrainOptions
    from samnet.pipeline.plan_and_train import fold_runs, plan_everything

    options = PlanAndTrainOptions(
        folds=(FOLD,),
        configurations=("2d",),
        methods=METHODS,
        budget=BudgetOptions(
            epochs=args.epochs,
            iterations_per_epoch=args.iterations_per_epoch,
            val_iterations_per_epoch=VAL_ITERATIONS,
            batch_size=args.batch_size,
        ),
        device=args.device,
        overwrite=args.overwrite,
    )
    baseline_plans, sam_plans = plan_everything(dataset, options, overrides)
    runs = fold_runs(
        dataset, options, baseline_plans, sam_plans, on_cpu=args.device == "cpu"
    )
    by_method = {
        "nnunet" if run.method.trainer == BASELINE_TRAINER else "sam": run
        for run in runs
    }
    plans = json.loads(sam_plans.read_text())
    sam = plans["configurations"][by_method["sam"].method.configuration]["sam"]
    record["hardware"] = plans["samnet"]["hardware"]
    record["sam_plan"] = {
        key: sam.get(key)
        for key in (
            "backbone",
            "input_size",
            "encoder_mode",
            "peft",
            "gradient_checkpointing",
            "budget",
        )
    }
    record["runs"] = {
        method: {"method": run.method.folder_name, "budget": asdict(run.budget)}
        for method, run in by_method.items()
    }
    return by_method


def planned_memory(dataset: Dataset, run: FoldRun) -> dict:
    """What the plan models for training ``run``: the batch its planner chose, memory per
    sample and for the batch trained, and SAM's seconds per step.

    The one place that reads planned memory and batch, so that it follows the planner.
    SAM: samnet's cost model (``plan_step_cost``) of the plan, on the plan's hardware.
    nnU-Net: its planner's VRAM model (``nnunet_mb_per_sample``).
    """
    from samnet.core.methods import planned_batch_size

    plans_file = dataset.plans_file(run.method.plans)
    plans = json.loads(plans_file.read_text())
    configuration = plans["configurations"][run.method.configuration]
    batch = run.budget.batch_size
    if "sam" in configuration:
        per_sample, seconds_per_sample = sam_cost_per_sample(
            configuration["sam"], plans["samnet"]["hardware"], plans_file
        )
        seconds, model = seconds_per_sample * batch, "samnet's cost model"
    else:
        per_sample = nnunet_mb_per_sample(dataset, configuration)
        seconds, model = None, "nnU-Net's VRAM model"
    return {
        "planned_batch_size": planned_batch_size(configuration),
        "batch_size": batch,
        "planned_mb_per_sample": per_sample,
        "planned_mb": per_sample * batch,
        "planned_seconds_per_step": seconds,
        "planned_by": model,
    }


def sam_cost_per_sample(
    sam_block: dict, hardware: dict, plans_file: Path
) -> tuple[float, float]:
    """Memory (MB) and seconds per training slice of a plan's ``sam`` block on the
    ``hardware`` it was planned for (``Hardware.to_dict()``), by samnet's cost model."""
    from samnet.core.sam_plan import SamPlan
    from samnet.planners.cost_model import plan_step_cost
    from samnet.planners.hardware import Hardware

    cost = plan_step_cost(
        SamPlan.from_dict(sam_block, plans_file), Hardware(**hardware)
    )
    return cost.memory_mb_per_slice, cost.seconds_per_slice


def nnunet_mb_per_sample(dataset: Dataset, configuration: dict) -> float:
    """nnU-Net's modelled training memory (MB) per sample of a 2d ``configuration``: its
    planner's estimate (feature-map size) over its reference value, which stands for
    ``UNet_reference_val_corresp_GB`` at batch ``UNet_reference_val_corresp_bs_2d``."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )

    planner = ExperimentPlanner(dataset.id)
    architecture = configuration["architecture"]
    description = json.loads((dataset.preprocessed / "dataset.json").read_text())
    estimate = planner.static_estimate_VRAM_usage(
        tuple(configuration["patch_size"]),
        len(description["channel_names"]),
        len(description["labels"]),
        architecture["network_class_name"],
        architecture["arch_kwargs"],
        architecture["_kw_requires_import"],
    )
    gigabytes = planner.UNet_reference_val_corresp_GB * estimate
    gigabytes /= planner.UNet_reference_val_2d
    return gigabytes * 1024 / planner.UNet_reference_val_corresp_bs_2d


def measured_memory(device: torch.device) -> dict:
    """The peak since ``start_peak_memory`` as the fold stats measure it (on CUDA
    ``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS so far, not per
    stage) and, on CUDA, the peak the caching allocator reserved (what the GPU held)."""
    from samnet.pipeline.fold_stats import peak_memory

    measured = peak_memory(device)
    if device.type == "cuda":
        measured["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / MB
    return measured


def steady_seconds_per_step(seconds_per_epoch: list[float], iterations: int) -> float:
    """Seconds per step over the epochs after the first (which also compiles the network
    and starts the loader workers); over the only epoch when there is one. An epoch's
    time includes its ``VAL_ITERATIONS`` validation batch."""
    steady = seconds_per_epoch[1:] or seconds_per_epoch
    return sum(steady) / (len(steady) * iterations)


def train(record: dict, dataset: Dataset, run: FoldRun, device: torch.device) -> None:
    """Train ``run`` afresh with nnU-Net's loop (``build_trainer``: the budget's batch and
    steps, no validation after it) and record what it cost against the plan."""
    from torch._dynamo import OptimizedModule

    from samnet.pipeline.fold_stats import epoch_seconds, start_peak_memory
    from samnet.pipeline.train_fold import build_trainer, fold_folder

    record["method"] = run.method.folder_name
    record["memory"] = planned_memory(dataset, run)
    shutil.rmtree(fold_folder(dataset.name, run.method, FOLD), ignore_errors=True)
    trainer = build_trainer(dataset.name, run.method, FOLD, run.budget, device)
    start_peak_memory(device)
    try:
        trainer.run_training()
    finally:
        # Also when training fails: the peak it reached says how far off the plan was.
        record["memory"].update(measured_memory(device))
    seconds = epoch_seconds(trainer)
    record["seconds_per_epoch"] = seconds
    record["seconds_per_step"] = steady_seconds_per_step(
        seconds, run.budget.iterations_per_epoch
    )
    record["amp"] = trainer.grad_scaler is not None
    record["compiled"] = isinstance(trainer.network, OptimizedModule)
    # The cached trainers' embedding cache, built before the first epoch.
    cache = getattr(trainer, "cache", None)
    record["embedding_cache_seconds"] = (
        None if cache is None else cache.info["build_seconds"]
    )


def predict(
    record: dict, dataset: Dataset, run: FoldRun, cases: int, device: torch.device
) -> None:
    """Segment the first ``cases`` images of the dataset's ``imagesTs`` with ``run``'s
    fold, as ``samnet_predict --model TRAINER:PLANS:CONFIG`` does."""
    from samnet.core.output_folder import own_outputs
    from samnet.inference.file_formats import cases_in_folder
    from samnet.inference.run import Options, predict_cases
    from samnet.inference.selection import (
        channel_names,
        select_models,
        training_dataset_json,
    )
    from samnet.pipeline.fold_stats import start_peak_memory

    method = run.method
    model = f"{method.trainer}:{method.plans}:{method.configuration}"
    selection = select_models(dataset.results, [model], [FOLD])
    channels = channel_names(training_dataset_json(selection))
    found = cases_in_folder(dataset.raw / "imagesTs", len(channels))
    chosen = dict(sorted(found.items())[:cases])
    output = dataset.results / PREDICTIONS_FOLDER / method.folder_name
    start_peak_memory(device)
    with own_outputs(output, overwrite=True) as folder:
        made = predict_cases(chosen, folder, selection, Options(device=device.type))
    record.update(
        method=method.folder_name,
        cases=made["cases"],
        seconds_per_case=made["seconds_per_case"],
        memory=measured_memory(device),
    )


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: --device cuda, but no CUDA GPU is visible")
    device = torch.device(args.device)
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* at import: set before any stage.
    os.environ.update(work_environment(f"gpu_smoke_{device.type}"))
    for variable, count in worker_processes(len(os.sched_getaffinity(0))).items():
        os.environ.setdefault(variable, count)
    overrides = overrides_from(args)
    smoke = Smoke(f"gpu_smoke_{device.type}", args.fail_stage)
    smoke.result.update(
        benchmark="gpu_smoke",
        machine=machine(),
        device=device.type,
        quiet=args.busy is None,
        machine_busy_with=args.busy,
        fold=FOLD,
        asked_budget={
            "epochs": args.epochs,
            "iterations_per_epoch": args.iterations_per_epoch,
            "val_iterations_per_epoch": VAL_ITERATIONS,
            "batch_size": args.batch_size,
        },
        overrides=overrides,
        environment={
            variable: os.environ.get(variable)
            for variable in ("nnUNet_def_n_proc", "nnUNet_n_proc_DA", "nnUNet_compile")
        },
    )
    start = time.perf_counter()
    dataset = smoke.stage("setup", lambda record: setup(record, args))
    runs = smoke.stage(
        "plan",
        lambda record: plan(record, dataset, args, overrides),
        needs=("setup",),
    )
    for method in METHODS:
        smoke.stage(
            f"train_{method}",
            lambda record, method=method: train(record, dataset, runs[method], device),
            needs=("plan",),
        )
        smoke.stage(
            f"predict_{method}",
            lambda record, method=method: predict(
                record, dataset, runs[method], args.test_cases, device
            ),
            needs=(f"train_{method}",),
        )
    smoke.result["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_result(smoke.name, smoke.result)
    return 0 if smoke.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
