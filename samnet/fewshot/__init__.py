"""Few-shot mode (Xie et al., WACV 2024): a few labelled slices prompt SAM's mask decoder.

The frozen encoder's embeddings of the annotated regions of K support slices become class
prototypes; a small prompt projection (plus a learned embedding per class) turns them
into the tokens SAM's mask decoder queries each image embedding with
(``samnet.models.prototype_head``). Only the decoder
and the projection train, on the support slices alone; the prototypes are stored in the
network, so it segments whole volumes slice by slice with no user interaction, through
nnU-Net's predictor and metric like every other samnet method.

Pieces: ``support`` (which slices: a user's file or an automatic choice, checked against
the fold), ``prototypes`` (masked average pooling, leave-one-out episodes),
``support_set`` (a fold's support windows on the frozen encoder), and the trainer
``samnet.trainers.fewshot_trainer.nnUNetTrainerSAMFewShot``.

The Python API (call it under ``if __name__ == "__main__":``: nnU-Net starts worker
processes with spawn)::

    from samnet.fewshot import predict_few_shot, train_few_shot

    report = train_few_shot("Dataset004_Hippocampus", shots=5, folds=[0])
    predict_few_shot("Dataset004_Hippocampus", "imagesTs", "predictions")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from samnet.core.errors import SamnetError

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
    from samnet.pipeline.plan_and_train import parse_arguments, plan_and_train

    options = {
        "--few-shot": shots,
        "--support": support,
        "--few-shot-seed": seed,
        "--epochs": epochs,
        "--iterations-per-epoch": iterations_per_epoch,
        "--batch-size": batch_size,
    }
    argv = [str(dataset), "--folds", *map(str, folds), "--methods", *methods]
    argv += ["--device", device, *(["--overwrite"] if overwrite else [])]
    for option, value in options.items():
        if value is not None:
            argv += [option, str(value)]
    return plan_and_train(parse_arguments(argv))


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
    trained fold). Returns samnet_predict's record of the run.
    """
    from samnet.core.atomic import atomic_folder
    from samnet.core.layout import SAM_CONFIGURATION, SAM_PLANS
    from samnet.core.methods import FEW_SHOT_TRAINER
    from samnet.core.paths import configure_environment
    from samnet.inference.file_formats import cases_in_folder
    from samnet.inference.run import Options, predict_cases
    from samnet.inference.selection import (
        channel_names,
        find_trained_dataset,
        select_models,
        training_dataset_json,
    )
    from samnet.pipeline.train_fold import resolve_device

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
    with atomic_folder(Path(output_folder), overwrite) as folder:
        return predict_cases(cases, folder, selection, options)
