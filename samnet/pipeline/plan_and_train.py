"""samnet_plan_and_train: check, plan, preprocess, train every method on every fold, and report.

Re-running continues: planned and preprocessed data are reused, finished folds are
skipped and interrupted ones resume from their last epoch.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from samnet.cli.plan import add_override_arguments, overrides_from
from samnet.core.datasets import dataset_id, find_raw_dataset
from samnet.core.errors import SamnetError, cli_entry
from samnet.core.layout import SLURM_FOLDER
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
from samnet.core.paths import configure_environment, preprocessed_folder
from samnet.core.sam_plan import SamPlan
from samnet.pipeline.launchers import LAUNCHERS, Cluster, FoldRun, run_id

METHOD_KINDS = ("sam", "nnunet", "support")
DEFAULT_METHOD_KINDS = ["sam", "nnunet"]


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
        help=f"default {GPU_EPOCHS} on GPU (nnU-Net's), {CPU_EPOCHS} on CPU",
    )
    parser.add_argument(
        "--iterations-per-epoch",
        type=positive_int,
        default=None,
        help=f"optimizer steps per epoch; default {GPU_ITERATIONS} on GPU, {CPU_ITERATIONS} on CPU",
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
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local: train here, one fold after another; torchrun: each fold a DDP job "
        "(run here on one node, printed for every node on several); slurm: write a job "
        "array (a task per fold x method) and a comparison job after it",
    )
    parser.add_argument(
        "--nnodes",
        type=positive_int,
        default=1,
        help="machines per fold (torchrun, slurm)",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=positive_int,
        default=None,
        help="processes per machine (default: its GPUs, or 1 on CPU)",
    )
    parser.add_argument(
        "--rdzv-endpoint",
        default=None,
        metavar="HOST:PORT",
        help="where the nodes meet (torchrun with --nnodes > 1)",
    )
    parser.add_argument(
        "--sbatch-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="an extra #SBATCH line, e.g. --sbatch-option=--partition=gpu (repeatable)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="re-plan, re-preprocess and retrain the folds",
    )
    add_override_arguments(parser)
    return parser.parse_args(argv)


def require_valid_dataset(folder) -> None:
    """Stop before planning when the dataset checker finds any problem, listing all of them."""
    from samnet.preprocessing.checks.dataset import check_dataset

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
        CPU_ITERATIONS if on_cpu else GPU_ITERATIONS
    )
    return Budget(
        epochs=args.epochs or (CPU_EPOCHS if on_cpu else GPU_EPOCHS),
        iterations_per_epoch=iterations,
        val_iterations_per_epoch=args.val_iterations_per_epoch
        or max(1, iterations // 5),
        batch_size=(args.batch_size if dimensions == 2 else args.batch_size_3d)
        or default_batch_size(configuration["batch_size"], dimensions, on_cpu),
    )


def lowres_baseline(sam_plans: Path, sam_configurations: dict) -> Method:
    """nnU-Net's trainer on the SAM plans' ``2d_lowres``; an error where it was not planned."""
    from samnet.core.layout import LOWRES_2D_CONFIGURATION, SAM_PLANS

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
    from samnet.core.layout import LOWRES_2D_CONFIGURATION

    return method.configuration in ("2d", LOWRES_2D_CONFIGURATION)


def support_baselines(
    sam_plans: Path, few_shot: bool, configuration: str
) -> list[Method]:
    """nnU-Net on the few-shot support slices (K and 10K) of ``configuration``'s data."""
    from samnet.core.layout import SAM_PLANS

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
    from samnet.core.layout import SAM_CONFIGURATION
    from samnet.pretraining.identity import finished_pretrained_bases

    plan = SamPlan.from_dict(
        json.loads(sam_plans.read_text())["configurations"][SAM_CONFIGURATION]["sam"],
        sam_plans,
    )
    return plan.pretrain and plan.backbone not in finished_pretrained_bases(
        dataset_name
    )


def plan_and_train(args: argparse.Namespace) -> Path | None:
    """Run the whole job for parsed arguments; returns what ``launch`` says, or the report folder."""
    configure_environment()
    from samnet.core.layout import LOWRES_2D_CONFIGURATION, SAM_CONFIGURATION, SAM_PLANS
    from samnet.pipeline.planning import plan_and_preprocess, plan_sam, preprocess
    from samnet.pipeline.pretrain import continue_pretraining
    from samnet.pipeline.pretrain import parse_arguments as pretrain_arguments
    from samnet.pipeline.train_fold import resolve_device, train_fold

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
    if "sam" in args.methods and pretraining_planned(sam_plans, dataset_name):
        continue_pretraining(
            pretrain_arguments([dataset_name, "--device", args.device])
        )
        # Re-plan: the planner now finds the new weights and fine-tunes them.
        sam_plans = plan_sam(
            dataset_id(dataset_name),
            dataset_name,
            args.device,
            overrides_from(args),
            overwrite=True,
        )
    on_cpu = device.type == "cpu"
    sam_configurations = json.loads(sam_plans.read_text())["configurations"]
    sam_block = sam_configurations[SAM_CONFIGURATION]["sam"]
    baselines = baseline_methods(plans_identifier, configurations)
    if lowres:
        baselines.append(lowres_baseline(sam_plans, sam_configurations))
    few_shot = sam_block.get("few_shot") is not None
    sam = sam_method(SAM_PLANS, SAM_CONFIGURATION, sam_block)
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
    runs = [FoldRun(m, fold, budgets[m]) for m in budgets for fold in args.folds]
    if args.launcher != "local":
        return launch(args, dataset_name, runs, device)
    for index, run in enumerate(runs, start=1):
        print(
            f"samnet: [{index}/{len(runs)}] {run.method.folder_name} fold {run.fold}: "
            f"{run.budget.epochs} epochs x {run.budget.iterations_per_epoch} steps, "
            f"batch {run.budget.batch_size}, {device}"
        )
        train_fold(
            dataset_name,
            run.method,
            run.fold,
            run.budget,
            device,
            overwrite=args.overwrite,
            save_probabilities=args.npz,
        )
    return report(dataset_name)


def report(dataset_name: str) -> Path:
    """``samnet_compare``'s report, printed; returns its folder."""
    from samnet.evaluation.report import write_report

    folder = write_report(dataset_name)
    print((folder / "report.md").read_text())
    print(f"samnet: report written to {folder}")
    return folder


def launch(
    args: argparse.Namespace, dataset_name: str, runs: list[FoldRun], device
) -> Path | None:
    """Hand the fold runs to torchrun or SLURM (``samnet.pipeline.launchers``).

    Returns the report folder when the runs ended here, the SLURM folder when scripts were
    written, None when the torchrun commands were printed for the nodes to run.
    """
    import subprocess

    import torch

    from samnet.core.paths import results_folder
    from samnet.pipeline.launchers import torchrun_command, write_slurm_jobs

    gpus = device.type == "cuda"
    cluster = Cluster(
        args.nnodes,
        args.nproc_per_node or (torch.cuda.device_count() if gpus else 1),
        args.rdzv_endpoint,
    )
    arguments = [
        run.arguments(dataset_name, device.type, args.npz, args.overwrite)
        for run in runs
    ]
    if args.launcher == "slurm":
        folder = write_slurm_jobs(
            dataset_name,
            runs,
            arguments,
            cluster,
            gpus,
            results_folder() / dataset_name / SLURM_FOLDER,
            args.overwrite,
            args.sbatch_option,
        )
        print(
            f"samnet: {len(runs)} training task(s) in {folder}/train.sbatch, the comparison "
            f"in compare.sbatch after them; submit both with: bash {folder}/submit.sh"
        )
        return folder
    commands = [
        torchrun_command(cluster, run_id(dataset_name, run), a)
        for run, a in zip(runs, arguments)
    ]
    if cluster.nnodes > 1:
        print(
            f"samnet: run each command on all {cluster.nnodes} nodes, one after another:"
        )
        for command in commands:
            print(shlex.join(command))
        print(f"then, on one node: samnet_compare {dataset_name}")
        return None
    for index, (run, command) in enumerate(zip(runs, commands), start=1):
        print(f"samnet: [{index}/{len(runs)}] {shlex.join(command)}")
        if subprocess.run(command, check=False).returncode != 0:
            raise SamnetError(
                None,
                f"torchrun failed on {run.method.folder_name} fold {run.fold} (its output is above)",
                "fix the cause and re-run the same command: finished folds are kept, this one resumes",
            )
    return report(dataset_name)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    plan_and_train(parse_arguments(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
