"""Check, plan, preprocess, train every method on every fold with the same optimizer
steps (the fairness rule: ``samnet.core.methods.Budget``), and report.

What ``samnet_plan_and_train`` runs. Re-running continues: planned and preprocessed data
are reused, finished folds are skipped and interrupted ones resume from their last epoch.
Two runs on one dataset (folds 0 1 on one GPU, 2 3 4 on another) meet safely: one plans
and preprocesses while the other waits, plans and ``splits_final.json`` are complete
before any fold trains, and each fold trains in one run only (``samnet.core.locks``).
Import it after ``configure_environment()``: nnunetv2, which trains and plans, reads the
``nnUNet_*`` variables at import.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from samnet.core.datasets import Dataset
from samnet.core.devices import resolve_device
from samnet.core.errors import SamnetError
from samnet.core.layout import (
    BASELINE_PLANS,
    LOWRES_2D_CONFIGURATION,
    SAM_CONFIGURATION,
    SAM_PLANS,
)
from samnet.core.locks import every_fold_lock, planning_lock
from samnet.core.methods import (
    BASELINE_TRAINER,
    CPU_EPOCHS,
    CPU_ITERATIONS,
    GPU_EPOCHS,
    GPU_ITERATIONS,
    SUPPORT_TRAINERS,
    Budget,
    Method,
    baseline_methods,
    default_batch_size,
    sam_method,
)
from samnet.core.sam_plan import SamPlan
from samnet.evaluation.report import write_report
from samnet.pipeline.launchers import FoldRun, launch
from samnet.pipeline.options import BudgetOptions, PlanAndTrainOptions, PretrainOptions
from samnet.pipeline.planning import (
    BASELINE_PLANNERS,
    data_folders,
    plan_baselines,
    plan_sam,
    preprocess,
)
from samnet.pipeline.pretrain import continue_pretraining
from samnet.preprocessing.checks.dataset import check_dataset
from samnet.pretraining.identity import finished_pretrained_bases


def require_valid_dataset(folder: Path) -> None:
    """Stop before planning when the dataset checker finds any problem, listing all of them."""
    problems = check_dataset(folder, progress=True)
    if problems:
        for problem in problems:
            print(problem)
        raise SamnetError(
            folder,
            f"{len(problems)} problem(s) in the dataset (listed above)",
            "fix them and run again",
        )


def budget_for(
    method: Method, dataset: Dataset, asked: BudgetOptions, on_cpu: bool
) -> Budget:
    """The budget of one method on its own plan: the user's numbers, else nnU-Net's
    steps and the plan's batch on GPU, a CPU-sized one on CPU (``Budget``)."""
    plans = json.loads(dataset.plans_file(method.plans).read_text())
    configuration = plans["configurations"][method.configuration]
    dimensions = len(configuration["patch_size"])
    iterations = asked.iterations_per_epoch or (
        CPU_ITERATIONS if on_cpu else GPU_ITERATIONS
    )
    return Budget(
        epochs=asked.epochs or (CPU_EPOCHS if on_cpu else GPU_EPOCHS),
        iterations_per_epoch=iterations,
        val_iterations_per_epoch=asked.val_iterations_per_epoch
        or max(1, iterations // 5),
        batch_size=(asked.batch_size if dimensions == 2 else asked.batch_size_3d)
        or default_batch_size(configuration, on_cpu),
    )


def lowres_baseline(sam_plans: Path, sam_configurations: dict) -> Method:
    """nnU-Net's trainer on the SAM plans' ``2d_lowres``; an error where it was not planned."""
    if LOWRES_2D_CONFIGURATION not in sam_configurations:
        raise SamnetError(
            sam_plans,
            f"no {LOWRES_2D_CONFIGURATION} configuration: either SAM sees the slices at "
            "nnU-Net's 2d spacing (then 2d is already the baseline at SAM's resolution) or "
            f"the plan was made by a samnet without {LOWRES_2D_CONFIGURATION}",
            f"drop {LOWRES_2D_CONFIGURATION} from --configurations, or re-plan with "
            "--overwrite (retrains the SAM folds)",
        )
    return Method(BASELINE_TRAINER, SAM_PLANS, LOWRES_2D_CONFIGURATION)


def reference_2d(baselines: list[Method], plans_identifier: str) -> Method:
    """The 2d baseline whose budget SAM gets on CPU: the first 2d one of ``baselines``,
    else nnU-Net's 2d of ``plans_identifier``."""
    baselines_2d = [m for m in baselines if is_2d_baseline(m)]
    return (baselines_2d or [Method(BASELINE_TRAINER, plans_identifier, "2d")])[0]


def is_2d_baseline(method: Method) -> bool:
    """A 2d U-Net of nnU-Net (of any plans, or 2d_lowres at SAM's spacing): trained with
    SAM's budget on CPU."""
    return method.configuration in ("2d", LOWRES_2D_CONFIGURATION)


def support_baselines(
    sam_plans: Path, few_shot: bool, configuration: str
) -> list[Method]:
    """nnU-Net on the few-shot support slices (K and 10K) of ``configuration``'s data."""
    if not few_shot:
        raise SamnetError(
            sam_plans,
            "--methods support trains nnU-Net on the few-shot support slices, but this "
            "SAM plan is not few-shot",
            "add --few-shot K (with --overwrite to re-plan)",
        )
    return [Method(t, SAM_PLANS, configuration) for t in SUPPORT_TRAINERS]


def pretraining_planned(sam_plans: Path, dataset_name: str) -> bool:
    """The SAM plan asks for continued pre-training and no finished run of its backbone
    is there yet."""
    plan = SamPlan.from_dict(
        json.loads(sam_plans.read_text())["configurations"][SAM_CONFIGURATION]["sam"],
        sam_plans,
    )
    return plan.pretrain and plan.backbone not in finished_pretrained_bases(
        dataset_name
    )


def plan_everything(
    dataset: Dataset, options: PlanAndTrainOptions, overrides: dict[str, Any]
) -> tuple[dict[str, list[str]], Path]:
    """Plan and preprocess the baselines' nnU-Net configurations and SAM's, pre-training
    first where the SAM plan asks; returns the preprocessed configurations by plans
    identifier and the SAM plans file.

    nnU-Net's default plans are always made: on CPU SAM's budget follows their 2d U-Net
    (``reference_2d``), and ResEnc's 2d and 3d_fullres read their data.
    """
    planned = dict.fromkeys((BASELINE_PLANS, *options.baseline_plans))
    # 2d_lowres lives in the SAM plans (it is trained on sam_2d's data); the rest in nnU-Net's.
    baseline_plans = plan_baselines(
        dataset,
        [BASELINE_PLANNERS[p] for p in planned],
        None
        if options.configurations is None
        else [c for c in options.configurations if c != LOWRES_2D_CONFIGURATION],
        options.overwrite,
    )
    sam_plans = plan_sam(dataset, options.device, overrides, options.overwrite)
    # sam_2d reads nnU-Net's 2d data where SAM keeps its spacing: preprocessed just above.
    written = data_folders(dataset, baseline_plans)
    preprocess(dataset, SAM_PLANS, [SAM_CONFIGURATION], options.overwrite, written)
    if "sam" in options.methods and pretraining_planned(sam_plans, dataset.name):
        continue_pretraining(dataset, PretrainOptions(device=options.device))
        # Re-plan: the planner now finds the new weights and fine-tunes them.
        sam_plans = plan_sam(dataset, options.device, overrides, overwrite=True)
    return baseline_plans, sam_plans


def chosen_baselines(
    options: PlanAndTrainOptions,
    baseline_plans: dict[str, list[str]],
    sam_plans: Path,
    sam_configurations: dict,
) -> tuple[list[Method], Method]:
    """nnU-Net's trainer on each configuration of each chosen plans (nnU-Net's default
    first, 2d_lowres after them where asked), and the 2d baseline whose budget SAM gets
    on CPU.

    Only nnU-Net's default 2d U-Net (at its spacing or at SAM's) is that reference: adding
    another plans' baselines changes no budget.
    """
    baselines = []
    if BASELINE_PLANS in options.baseline_plans:
        baselines = baseline_methods(BASELINE_PLANS, baseline_plans[BASELINE_PLANS])
    if LOWRES_2D_CONFIGURATION in (options.configurations or ()):
        baselines.append(lowres_baseline(sam_plans, sam_configurations))
    reference = reference_2d(baselines, BASELINE_PLANS)
    for plans in options.baseline_plans:
        if plans != BASELINE_PLANS:
            baselines += baseline_methods(plans, baseline_plans[plans])
    return baselines, reference


def fold_runs(
    dataset: Dataset,
    options: PlanAndTrainOptions,
    baseline_plans: dict[str, list[str]],
    sam_plans: Path,
    on_cpu: bool,
) -> list[FoldRun]:
    """Every chosen method on every fold, with its budget by the fairness rule
    (``samnet.core.methods.Budget``): on CPU SAM, the 2d and the support-slice baselines
    share the reference 2d baseline's budget; on a GPU each method's budget is its own
    plan's (``budget_for``)."""
    sam_configurations = json.loads(sam_plans.read_text())["configurations"]
    sam_block = sam_configurations[SAM_CONFIGURATION]["sam"]
    baselines, reference = chosen_baselines(
        options, baseline_plans, sam_plans, sam_configurations
    )
    few_shot = sam_block.get("few_shot") is not None
    sam = sam_method(SAM_PLANS, SAM_CONFIGURATION, sam_block)
    if few_shot and "sam" in options.methods:
        reason = next(d for d in sam_block["decisions"] if d["what"] == "few_shot")
        print(f"samnet: few-shot mode: {reason['because']}")
    chosen = [sam] if "sam" in options.methods else []
    if "support" in options.methods:
        chosen += support_baselines(sam_plans, few_shot, reference.configuration)
    shares_2d_budget = set(chosen)
    if "nnunet" in options.methods:
        chosen += baselines
        shares_2d_budget.update(m for m in baselines if is_2d_baseline(m))
    budgets = {
        method: budget_for(
            reference if on_cpu and method in shares_2d_budget else method,
            dataset,
            options.budget,
            on_cpu,
        )
        for method in chosen
    }
    return [FoldRun(m, fold, budgets[m]) for m in budgets for fold in options.folds]


def replanning_guard(
    dataset: Dataset, overwrite: bool
) -> contextlib.AbstractContextManager[None]:
    """With ``--overwrite`` (the plans and the data rewritten), every fold's lock: refused
    while another run trains a fold of the dataset from them."""
    if not overwrite:
        return contextlib.nullcontext()
    return every_fold_lock(dataset.name, "re-planning with --overwrite")


def plan_and_train(
    dataset: Dataset, options: PlanAndTrainOptions, overrides: dict[str, Any]
) -> Path | None:
    """The whole job, with the SAM plan's decisions ``overrides`` fixes (by rule name).

    Returns the report folder; None when the fold runs were handed on (SLURM jobs
    written, torchrun commands printed for the nodes) or some were left to another run
    training them, and the report comes after them.
    """
    device = resolve_device(options.device)
    require_valid_dataset(dataset.raw)
    # Everything a fold reads (plans, data, splits_final.json: plan_baselines writes it)
    # is complete before any fold trains or is handed on; a second run waits here for
    # the first, then finds it done.
    with planning_lock(dataset.name), replanning_guard(dataset, options.overwrite):
        baseline_plans, sam_plans = plan_everything(dataset, options, overrides)
        runs = fold_runs(
            dataset, options, baseline_plans, sam_plans, on_cpu=device.type == "cpu"
        )
    if not launch(
        dataset, runs, device, options.launch, options.npz, options.overwrite
    ):
        return None
    return report(dataset)


def report(dataset: Dataset) -> Path:
    """``samnet_compare``'s report, printed; returns its folder."""
    folder = write_report(dataset.name)
    print((folder / "report.md").read_text())
    print(f"samnet: report written to {folder}")
    return folder
