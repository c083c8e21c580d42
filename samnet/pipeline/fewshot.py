"""Few-shot mode from Python: plan, train and report, then segment new images.

Call these under ``if __name__ == "__main__":``: nnU-Net starts worker processes with
spawn. nnunetv2 is imported when a function runs, after ``configure_environment()``
has set its folders. ::

    from samnet.pipeline.fewshot import predict_few_shot, train_few_shot

    report = train_few_shot("Dataset004_Hippocampus", shots=5, folds=[0])
    predict_few_shot("Dataset004_Hippocampus", "imagesTs", "predictions")

The mode itself (support slices, prototypes, the trainer): :mod:`samnet.fewshot`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from samnet.core.datasets import Dataset
from samnet.core.devices import resolve_device
from samnet.core.errors import SamnetError
from samnet.core.layout import SAM_CONFIGURATION, SAM_PLANS
from samnet.core.methods import FEW_SHOT_TRAINER
from samnet.core.output_folder import own_outputs, refuse_overlap
from samnet.core.paths import configure_environment
from samnet.inference.file_formats import cases_in_folder
from samnet.inference.run import Options, predict_cases
from samnet.inference.selection import (
    channel_names,
    find_trained_dataset,
    select_models,
    training_dataset_json,
)
from samnet.pipeline.options import BudgetOptions, PlanAndTrainOptions

__all__ = ["predict_few_shot", "train_few_shot"]


def train_few_shot(
    dataset: str | int,
    shots: int | None = None,
    *,
    support: str | Path | None = None,
    seed: int | None = None,
    folds: Sequence[int] = (0,),
    methods: Sequence[str] = ("sam",),
    epochs: int | None = None,
    iterations_per_epoch: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Plan few-shot SAM, train it on ``folds``, validate with nnU-Net's metric, report.

    ``samnet_plan_and_train DATASET --few-shot K [--support FILE]`` as a function.

    Arguments:
      dataset: DatasetNNN, its full name or its id.
      shots: K, the support slices per fold, chosen from each fold's training cases.
      support: a JSON or CSV file of (case, slice) instead (``samnet.fewshot.support_selection``).
      seed: seed of the automatic choice (default 0).
      folds: cross-validation folds to train.
      methods: ``"sam"`` and/or ``"nnunet"`` (the baselines, on all labels).
      epochs, iterations_per_epoch, batch_size: the budget (samnet_plan_and_train's
        defaults when None).
      device: ``auto``, ``cpu`` or ``cuda``.
      overwrite: re-plan and retrain.

    Returns:
      The report folder (``$nnUNet_results/DatasetNNN_Name/samnet_report``).
    """
    if shots is None and support is None:
        raise SamnetError(
            None,
            "train_few_shot needs the support set's size or its slices",
            "pass shots=K or support='slices.json'",
        )
    overrides = {
        "few_shot": shots,
        "support": None if support is None else str(support),
        "few_shot_seed": seed,
    }
    options = PlanAndTrainOptions(
        folds=tuple(folds),
        methods=tuple(methods),
        budget=BudgetOptions(
            epochs=epochs,
            iterations_per_epoch=iterations_per_epoch,
            batch_size=batch_size,
        ),
        device=device,
        overwrite=overwrite,
    )
    configure_environment()
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* at import: configure_environment() first
    from samnet.pipeline.plan_and_train import plan_and_train

    return plan_and_train(
        Dataset.resolve(dataset),
        options,
        {name: value for name, value in overrides.items() if value is not None},
    )


def predict_few_shot(
    dataset: str | int,
    input_folder: str | Path,
    output_folder: str | Path,
    folds: Sequence[int] | None = None,
    device: str = "auto",
    overwrite: bool = False,
) -> dict:
    """Segment a folder of images with the trained few-shot model: no prompts, the support
    prototypes are in its checkpoints.

    ``samnet_predict -d DATASET --model nnUNetTrainerSAMFewShot:samnetPlans:sam_2d`` as a
    function: inputs in any format samnet_predict reads (``CASE_0000.ext`` per channel),
    each output in its input's format and geometry, ``folds`` averaged (default: every
    trained fold). ``output_folder`` is outside ``input_folder`` and not above it;
    ``overwrite`` replaces only what samnet wrote there before. Returns samnet_predict's
    record of the run.
    """
    refuse_overlap(Path(input_folder), Path(output_folder))
    configure_environment()

    model = f"{FEW_SHOT_TRAINER}:{SAM_PLANS}:{SAM_CONFIGURATION}"
    selection = select_models(
        find_trained_dataset(str(dataset)),
        [model],
        None if folds is None else list(folds),
    )
    channels = channel_names(training_dataset_json(selection))
    cases = cases_in_folder(Path(input_folder), len(channels))
    options = Options(device=resolve_device(device).type)
    with own_outputs(Path(output_folder), overwrite) as folder:
        return predict_cases(cases, folder, selection, options)
