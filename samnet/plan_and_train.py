"""samnet_plan_and_train: check, plan, preprocess, train every method on every fold, and report.

Re-running continues: planned and preprocessed data are reused, finished folds are
skipped and interrupted ones resume from their last epoch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from samnet.datasets import dataset_id, find_raw_dataset
from samnet.errors import SamnetError, cli_entry
from samnet.methods import (
    BASELINE_TRAINER,
    SUPPORT_TRAINERS,
    Budget,
    Method,
    baseline_methods,
    default_batch_size,
    sam_method,
)
from samnet.paths import configure_environment, preprocessed_folder
from samnet.plan import add_override_arguments, overrides_from

NNUNET_EPOCHS, NNUNET_ITERATIONS = 1000, 250
METHOD_KINDS = ("sam", "nnunet", "support")
DEFAULT_METHOD_KINDS = ["sam", "nnunet"]
CPU_EPOCHS, CPU_ITERATIONS = 20, 50


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="samnet_plan_and_train",
        description="Check, plan and preprocess a dataset, train every method on every fold with the same "
        "budget and splits, validate, and write samnet_report/ in the dataset's results folder.",
    )
    parser.add_argument(
        "dataset", help="DatasetNNN, its full name (Dataset004_Hippocampus) or its id"
    )
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        choices=range(5),
        metavar="F",
    )
    parser.add_argument(
        "--configurations",
        nargs="+",
        default=None,
        help="nnU-Net configurations (default: 2d and 3d_fullres if planned); 2d_lowres is "
        "nnU-Net's 2d U-Net at SAM's in-plane spacing, planned when SAM downsamples the slices",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"default {NNUNET_EPOCHS} on GPU (nnU-Net's), {CPU_EPOCHS} on CPU",
    )
    parser.add_argument(
        "--iterations-per-epoch",
        type=positive_int,
        default=None,
        help=f"optimizer steps per epoch; default {NNUNET_ITERATIONS} on GPU, {CPU_ITERATIONS} on CPU",
    )
    parser.add_argument(
        "--val-iterations-per-epoch",
        type=positive_int,
        default=None,
        help="validation batches per epoch for the pseudo Dice (default: a fifth of --iterations-per-epoch)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="one batch size for SAM and every 2d baseline (default: the 2d plan's on GPU, "
        "at most 32 on CPU)",
    )
    parser.add_argument(
        "--batch-size-3d",
        type=positive_int,
        default=None,
        help="batch size of the 3d baselines, whose patches hold dozens of slices each "
        "(default: the plan's on GPU, at most 2 on CPU)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHOD_KINDS,
        default=DEFAULT_METHOD_KINDS,
        help="what to train: the planned SAM configuration and/or the nnU-Net baselines "
        "(default: both); with --few-shot K, support adds nnU-Net trained on the same K "
        "support slices and on 10K",
    )
    parser.add_argument(
        "--npz",
        action="store_true",
        help="keep validation probabilities (.npz), which the report needs to score ensembles",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="re-plan, re-preprocess and retrain the folds",
    )
    add_override_arguments(parser)
    return parser.parse_args(argv)


def require_valid_dataset(folder) -> None:
    """Stop before planning when the dataset checker finds any problem, listing all of them."""
    from samnet.preprocessing.check_dataset import check_dataset

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
    method: Method, dataset_name: str, args: argparse.Namespace, on_cpu: bool
) -> Budget:
    """The budget of one method: the user's numbers, else nnU-Net's on GPU and a CPU-sized one on CPU."""
    plans = json.loads(
        (preprocessed_folder() / dataset_name / f"{method.plans}.json").read_text()
    )
    configuration = plans["configurations"][method.configuration]
    dimensions = len(configuration["patch_size"])
    iterations = args.iterations_per_epoch or (
        CPU_ITERATIONS if on_cpu else NNUNET_ITERATIONS
    )
    return Budget(
        epochs=args.epochs or (CPU_EPOCHS if on_cpu else NNUNET_EPOCHS),
        iterations_per_epoch=iterations,
        val_iterations_per_epoch=args.val_iterations_per_epoch
        or max(1, iterations // 5),
        batch_size=(args.batch_size if dimensions == 2 else args.batch_size_3d)
        or default_batch_size(configuration["batch_size"], dimensions, on_cpu),
    )


def lowres_baseline(sam_plans: Path, sam_configurations: dict) -> Method:
    """nnU-Net's trainer on the SAM plans' ``2d_lowres``; an error where it was not planned."""
    from samnet.planners.sam_planner import LOWRES_2D_CONFIGURATION, SAM_PLANS

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
    """The 2d baseline whose budget SAM gets: the first 2d one trained, else nnU-Net's 2d."""

    baselines_2d = [m for m in baselines if is_2d_baseline(m)]
    return (baselines_2d or [Method(BASELINE_TRAINER, plans_identifier, "2d")])[0]


def is_2d_baseline(method: Method) -> bool:
    """nnU-Net's 2d U-Net, at its own spacing or at SAM's: trained with SAM's budget."""
    from samnet.planners.sam_planner import LOWRES_2D_CONFIGURATION

    return method.configuration in ("2d", LOWRES_2D_CONFIGURATION)


def support_baselines(
    sam_plans: Path, few_shot: bool, configuration: str
) -> list[Method]:
    """nnU-Net on the few-shot support slices (K and 10K) of ``configuration``'s data."""
    from samnet.planners.sam_planner import SAM_PLANS

    if not few_shot:
        raise SamnetError(
            sam_plans,
            "--methods support trains nnU-Net on the few-shot support slices, but this "
            "SAM plan is not few-shot",
            "add --few-shot K (with --overwrite to re-plan)",
        )
    return [Method(t, SAM_PLANS, configuration) for t in SUPPORT_TRAINERS]


def plan_and_train(args: argparse.Namespace) -> Path:
    """Run the whole job for parsed arguments; returns the report folder."""
    configure_environment()
    from samnet.planners.sam_planner import (
        LOWRES_2D_CONFIGURATION,
        SAM_CONFIGURATION,
        SAM_PLANS,
    )
    from samnet.planning import plan_and_preprocess, plan_sam, preprocess
    from samnet.report import write_report
    from samnet.training import resolve_device, train_fold

    device = resolve_device(args.device)
    raw = find_raw_dataset(args.dataset)
    dataset_name = raw.name
    require_valid_dataset(raw)
    # 2d_lowres lives in the SAM plans (it is trained on sam_2d's data); the rest in nnU-Net's.
    lowres = LOWRES_2D_CONFIGURATION in (args.configurations or [])
    plans_identifier, configurations = plan_and_preprocess(
        dataset_id(dataset_name),
        dataset_name,
        None
        if args.configurations is None
        else [c for c in args.configurations if c != LOWRES_2D_CONFIGURATION],
        overwrite=args.overwrite,
    )
    sam_plans = plan_sam(
        dataset_id(dataset_name),
        dataset_name,
        args.device,
        overrides_from(args),
        overwrite=args.overwrite,
    )
    preprocess(
        dataset_id(dataset_name),
        dataset_name,
        SAM_PLANS,
        [SAM_CONFIGURATION],
        args.overwrite,
    )
    on_cpu = device.type == "cpu"
    sam_configurations = json.loads(sam_plans.read_text())["configurations"]
    sam_block = sam_configurations[SAM_CONFIGURATION]["sam"]
    baselines = baseline_methods(plans_identifier, configurations)
    if lowres:
        baselines.append(lowres_baseline(sam_plans, sam_configurations))
    few_shot = sam_block.get("few_shot") is not None
    sam = sam_method(SAM_PLANS, SAM_CONFIGURATION, sam_block["encoder_mode"], few_shot)
    if few_shot and "sam" in args.methods:
        reason = next(d for d in sam_block["decisions"] if d["what"] == "few_shot")
        print(f"samnet: few-shot mode: {reason['because']}")
    # SAM, every 2d baseline and the support-slice baselines get exactly the reference's
    # budget: the same optimizer steps of the same batch size.
    reference = reference_2d(baselines, plans_identifier)
    budget_2d = budget_for(reference, dataset_name, args, on_cpu)
    chosen = [sam] if "sam" in args.methods else []
    if "support" in args.methods:
        chosen += support_baselines(sam_plans, few_shot, reference.configuration)
    budgets = dict.fromkeys(chosen, budget_2d)
    if "nnunet" in args.methods:
        for method in baselines:
            budgets[method] = (
                budget_2d
                if is_2d_baseline(method)
                else budget_for(method, dataset_name, args, on_cpu)
            )
    runs = [(method, fold) for method in budgets for fold in args.folds]
    for index, (method, fold) in enumerate(runs, start=1):
        budget = budgets[method]
        print(
            f"samnet: [{index}/{len(runs)}] {method.folder_name} fold {fold}: "
            f"{budget.epochs} epochs x {budget.iterations_per_epoch} steps, batch {budget.batch_size}, {device}"
        )
        train_fold(
            dataset_name,
            method,
            fold,
            budget,
            device,
            overwrite=args.overwrite,
            save_probabilities=args.npz,
        )
    folder = write_report(dataset_name)
    print((folder / "report.md").read_text())
    print(f"samnet: report written to {folder}")
    return folder


@cli_entry
def main(argv: list[str] | None = None) -> int:
    plan_and_train(parse_arguments(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
