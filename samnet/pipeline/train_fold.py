"""Train and validate one nnU-Net trainer on one fold, with an explicit budget, resumably.

Every method samnet compares (nnU-Net baselines and samnet's SAM trainers) runs through
:func:`train_fold`, so they share the same splits, the same budget rules, the same
resume logic and the same validation.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from samnet.core.atomic import atomic_file
from samnet.core.datasets import Dataset, dataset_id
from samnet.core.errors import SamnetError
from samnet.core.layout import (
    FINAL_CHECKPOINT,
    FOLD_BUDGET_FILE,
    FOLD_ORIGIN_FILE,
    FOLD_STATS_FILE,
    LATEST_CHECKPOINT,
)
from samnet.core.methods import Budget, Method
from samnet.core.paths import preprocessed_folder, results_folder
from samnet.pipeline.fold_stats import fold_stats, start_peak_memory
from samnet.pipeline.planning import trained_from
from samnet.trainers.checkpoints import read_checkpoint
from samnet.trainers.distributed import barrier, is_rank_zero
from samnet.trainers.variants import training_variant


def fold_folder(dataset_name: str, method: Method, fold: int) -> Path:
    return results_folder() / dataset_name / method.folder_name / f"fold_{fold}"


def validation_summary(dataset_name: str, method: Method, fold: int) -> Path:
    return fold_folder(dataset_name, method, fold) / "validation" / "summary.json"


def write_json_atomically(data: dict, path: Path) -> None:
    with atomic_file(path) as handle:
        handle.write(json.dumps(data, indent=2).encode())


def claim_budget(folder: Path, budget: Budget) -> None:
    """Record the budget of a fold; refuse to resume a fold that was started with another one."""
    path = folder / FOLD_BUDGET_FILE
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != asdict(budget):
            raise SamnetError(
                path,
                f"this fold was started with budget {recorded}, not {asdict(budget)}",
                "re-run with the same --epochs/--iterations-per-epoch/--batch-size, or pass --overwrite to retrain",
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomically(asdict(budget), path)


def claim_origin(folder: Path, origin: str, done: bool) -> None:
    """Record what the fold trains on (``planning.trained_from``); refuse a fold started or
    finished under another plan or other preprocessed data. Folds from before this record
    are accepted as they are."""
    path = folder / FOLD_ORIGIN_FILE
    if path.exists():
        if json.loads(path.read_text())["trained_from"] != origin:
            state = "was trained" if done else "was started"
            raise SamnetError(
                folder,
                f"this fold {state} under another plan or other preprocessed data "
                "(re-planned or re-preprocessed since)",
                "pass --overwrite to retrain it",
            )
    elif not done:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically({"trained_from": origin}, path)


def fold_origin(dataset_name: str, method: Method) -> str | None:
    """``planning.trained_from`` of ``method``'s configuration; None where it is not
    planned (``planned`` says so when the fold is trained)."""
    try:
        planned(dataset_name, method)
    except SamnetError:
        return None
    dataset = Dataset(dataset_id(dataset_name), dataset_name)
    return trained_from(dataset, method.plans, method.configuration)


def planned(dataset_name: str, method: Method) -> dict:
    """The plans ``method`` trains with; a clear error when they or its configuration are
    missing."""
    plans_file = preprocessed_folder() / dataset_name / f"{method.plans}.json"
    if not plans_file.exists():
        raise SamnetError(
            plans_file,
            "plans file not found",
            "plan the dataset first (samnet_plan_and_train does it)",
        )
    plans = json.loads(plans_file.read_text())
    if method.configuration not in plans["configurations"]:
        raise SamnetError(
            plans_file,
            f"configuration '{method.configuration}' is not planned (planned: {sorted(plans['configurations'])})",
            "choose a planned configuration with --configurations",
        )
    return plans


def build_trainer(
    dataset_name: str, method: Method, fold: int, budget: Budget, device: torch.device
) -> nnUNetTrainer:
    """An nnU-Net trainer of ``method`` set to ``budget``; the plans' batch size is replaced by the budget's.

    It is the ``training_variant`` of the trainer class: with a progress bar over the
    epochs, and DDP under torchrun (a process group is initialised).
    """
    base = preprocessed_folder() / dataset_name
    plans = planned(dataset_name, method)
    plans["configurations"][method.configuration]["batch_size"] = budget.batch_size
    plans["continue_training"] = True
    dataset_json = json.loads((base / "dataset.json").read_text())
    trainer_class = training_variant(
        recursive_find_trainer_class_by_name(method.trainer),
        distributed=torch.distributed.is_initialized(),
    )
    trainer = trainer_class(
        plans=plans,
        configuration=method.configuration,
        fold=fold,
        dataset_json=dataset_json,
        device=device,
    )
    trainer.num_epochs = budget.epochs
    trainer.num_iterations_per_epoch = budget.iterations_per_epoch
    trainer.num_val_iterations_per_epoch = budget.val_iterations_per_epoch
    # Small budgets make every epoch precious: checkpoint each one so an interrupted run resumes where it was.
    trainer.save_every = 1
    return trainer


def resume_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a fold continues from: ``checkpoint_final.pth`` (trained; only
    validation is left), else ``checkpoint_latest.pth``, else None (epoch 0).

    Each is first read without unpickling code (``read_checkpoint``), so an unreadable
    one is a clear error rather than nnU-Net's traceback. A final checkpoint torn by an
    earlier samnet (non-atomic writes) falls back to the latest one, which nnU-Net
    deletes only once the final one is written.
    """
    final, latest = folder / FINAL_CHECKPOINT, folder / LATEST_CHECKPOINT
    if final.exists():
        try:
            read_checkpoint(final)
            return final
        except SamnetError as error:
            if not latest.exists():
                raise
            print(f"samnet: {error.problem}; resuming from {latest} instead")
    if latest.exists():
        read_checkpoint(latest)
        return latest
    return None


def is_done(folder: Path) -> bool:
    """Whether the fold was validated: ``train_fold`` writes ``FOLD_STATS_FILE`` once
    validation completed, so it marks the fold done (``validation/summary.json`` does
    not: nnU-Net writes it in place, and a kill can tear it)."""
    return (folder / FOLD_STATS_FILE).is_file()


def train_fold(
    dataset_name: str,
    method: Method,
    fold: int,
    budget: Budget,
    device: torch.device,
    overwrite: bool = False,
    save_probabilities: bool = False,
) -> Path:
    """Train (or resume) ``method`` on ``fold``, validate it, and return its validation ``summary.json``.

    A fold is done once validated (``is_done``) and is left alone unless ``overwrite``;
    a fold trained but not validated is only validated.
    Under ``torchrun`` (a process group is initialised) every rank calls it; only rank 0
    writes files.
    """
    writes = is_rank_zero()
    folder = fold_folder(dataset_name, method, fold)
    if overwrite and folder.exists() and writes:
        shutil.rmtree(folder)
    barrier()  # no rank reads the folder before rank 0 has cleared it
    summary = validation_summary(dataset_name, method, fold)
    origin = fold_origin(dataset_name, method)
    if is_done(folder):
        if origin is not None:
            claim_origin(folder, origin, done=True)
        print(
            f"samnet: {method.folder_name} fold {fold} is done ({summary}); --overwrite retrains it"
        )
        return summary
    if writes:
        claim_budget(folder, budget)
        if origin is not None:
            claim_origin(folder, origin, done=False)
    start_peak_memory(device)
    trainer = build_trainer(dataset_name, method, fold, budget, device)
    checkpoint = resume_checkpoint(folder)
    if checkpoint is not None:
        # Read safely above; nnU-Net's own loader reads it again to restore the trainer.
        trainer.load_checkpoint(str(checkpoint))
    if checkpoint is None or checkpoint.name != FINAL_CHECKPOINT:
        if checkpoint is not None:
            print(
                f"samnet: resuming {method.folder_name} fold {fold} at epoch {trainer.current_epoch}"
            )
        trainer.run_training()
    start = time.perf_counter()
    trainer.perform_actual_validation(save_probabilities)
    stats = fold_stats(trainer, method, fold, budget, time.perf_counter() - start)
    if writes:
        # Written last: it marks the fold done.
        write_json_atomically(stats, folder / FOLD_STATS_FILE)
    return summary
