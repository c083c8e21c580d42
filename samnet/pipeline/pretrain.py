"""Continue pre-training the SAM encoder on a dataset's own slices (``samnet_pretrain``).

    samnet_pretrain Dataset004_Hippocampus --steps 300 --batch-size 8
    samnet_plan_and_train Dataset004_Hippocampus --overwrite  # plans on the new weights

Masked image modelling (``samnet.pretraining``) on random windows of every slice the SAM
configuration sees, imagesTr and imagesTs, as nnU-Net preprocesses them for ``sam_2d``
(labels are never read), starting from the plan's base weights at the plan's input size.
The default budget is the device's (``samnet.pipeline.pretrain_budget``, which also decides
gradient checkpointing on CUDA); on CUDA the steps run under float16 autocast
(``samnet.core.precision``).
Writes to ``$nnUNet_results/DATASET/samnet_pretrain/``: the new base weights and their
identity, ``pretrain.json`` (budget, device, precision, checkpointing, loss per step,
time) and ``pretrain_loss.png``. Interrupted runs resume from ``state.pth`` when re-run with the same
budget.
Import it after ``configure_environment()``: nnunetv2 reads the ``nnUNet_*`` variables at
import.
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
from pathlib import Path

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder
from tqdm import tqdm

from samnet.core.datasets import Dataset
from samnet.core.devices import resolve_device
from samnet.core.errors import SamnetError
from samnet.core.layout import (
    PRETRAIN_BUDGET_FILE,
    PRETRAIN_CURVE_FILE,
    PRETRAIN_RECORD_FILE,
    PRETRAIN_STATE_FILE,
    PRETRAINED_WEIGHTS_SUFFIX,
    SAM_CONFIGURATION,
    SAM_PLANS,
)
from samnet.core.precision import precision_for
from samnet.core.sam_plan import SamPlan
from samnet.evaluation.plots import figure_file
from samnet.models.backbones import get_backbone
from samnet.models.network import build_network
from samnet.pipeline.options import PretrainOptions
from samnet.pipeline.pretrain_budget import pretrain_hardware, pretrain_plan
from samnet.pretraining.identity import (
    folds_built_on,
    pretrained_folder,
    save_pretrained_base,
)
from samnet.pretraining.loop import pretrain
from samnet.pretraining.masked_image_model import MaskedImageModel
from samnet.pretraining.slices import slice_windows


def sam_configuration(dataset: Dataset) -> dict:
    """The ``sam_2d`` configuration of the dataset's SAM plans."""
    plans_file = dataset.plans_file(SAM_PLANS)
    if not plans_file.is_file():
        raise SamnetError(
            plans_file,
            "no SAM plan, so there is nothing to say which encoder and slices to use",
            f"plan first: samnet_plan {dataset.name} (or samnet_plan_and_train)",
        )
    return json.loads(plans_file.read_text())["configurations"][SAM_CONFIGURATION]


def claim_folder(dataset_name: str, budget: dict, overwrite: bool) -> Path:
    """Start the dataset's pre-training folder for ``budget``, or continue the run it holds
    with the same budget; returns the folder. ``overwrite`` starts again, unless trained
    SAM folds are built on the weights it holds."""
    folder = pretrained_folder(dataset_name)
    if overwrite and folder.exists():
        refuse_if_in_use(dataset_name, folder)
        shutil.rmtree(folder)
    if (folder / PRETRAIN_RECORD_FILE).exists():
        raise SamnetError(
            folder,
            "holds finished pre-trained weights",
            "use them (--checkpoint, see pretrain.json), or pass --overwrite to start again",
        )
    recorded = folder / PRETRAIN_BUDGET_FILE
    if recorded.exists() and json.loads(recorded.read_text()) != budget:
        raise SamnetError(
            recorded,
            f"this run was started with {recorded.read_text()}, not {budget}",
            "re-run with the same options on the same device (the default budget is the "
            "device's) to resume, or pass --overwrite to start again",
        )
    folder.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(budget))
    return folder


def refuse_if_in_use(dataset_name: str, folder: Path) -> None:
    """Refuse to remove pre-trained weights that trained SAM folds name as their base."""
    weights = sorted(folder.glob(f"*{PRETRAINED_WEIGHTS_SUFFIX}"))
    folds = folds_built_on(dataset_name, weights)
    if folds:
        named = ", ".join(str(fold.relative_to(folder.parent)) for fold in folds)
        raise SamnetError(
            folder,
            f"holds the base weights of {len(folds)} trained SAM fold(s): {named}; "
            "--overwrite would delete them and leave those models unloadable",
            "keep these weights (re-run without --overwrite), or move those fold folders "
            "away first if you mean to retrain them on new pre-trained weights",
        )


def preprocessed_test_images(dataset: Dataset) -> list[np.ndarray]:
    """The dataset's imagesTs, preprocessed for ``sam_2d`` as nnU-Net's predictor does
    (``C x slices x H x W`` each); none when it has no test images."""
    dataset_json = json.loads((dataset.raw / "dataset.json").read_text())
    images = dataset.raw / "imagesTs"
    if not images.is_dir():
        return []
    files = create_lists_from_splitted_dataset_folder(
        str(images), dataset_json["file_ending"]
    )
    plans = PlansManager(str(dataset.plans_file(SAM_PLANS)))
    configuration = plans.get_configuration(SAM_CONFIGURATION)
    preprocessor = configuration.preprocessor_class(verbose=False)
    return [
        preprocessor.run_case(case, None, plans, configuration, dataset_json)[0]
        for case in tqdm(files, desc="test images", unit="case")
    ]


def plot_losses(losses: list[float], path: Path) -> None:
    with figure_file(path, 1, (6, 3.5)) as (axes,):
        axes.plot(range(1, len(losses) + 1), losses, linewidth=0.8)
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("L1 on hidden pixels")
        axes.set_title("continued pre-training (masked image modelling)")


def continue_pretraining(dataset: Dataset, options: PretrainOptions) -> Path:
    """Pre-train the planned backbone on the dataset; returns the new weights."""
    configuration = sam_configuration(dataset)
    plan = SamPlan.from_dict(configuration["sam"])
    spec = get_backbone(plan.backbone)
    device = resolve_device(options.device)
    pretraining = pretrain_plan(
        options, spec, plan.input_size, pretrain_hardware(device)
    )
    budget = pretraining.budget
    masking = {"mask_ratio": options.mask_ratio, "mask_patch": options.mask_patch}
    folder = claim_folder(
        dataset.name, {**budget.__dict__, **masking}, options.overwrite
    )
    data = dataset.preprocessed / configuration["data_identifier"]
    preprocessed = infer_dataset_class(str(data))(str(data))
    cases = [preprocessed.load_case(case)[0] for case in preprocessed.identifiers]
    test_cases = preprocessed_test_images(dataset)
    channels = cases[0].shape[0]
    network, parent = build_network(
        plan.backbone,
        channels,
        2,
        image_size=plan.input_size,
        checkpoint=plan.checkpoint,
        gradient_checkpointing=pretraining.gradient_checkpointing,
    )
    model = MaskedImageModel(
        network.input_adapter,
        network.sam.image_encoder,
        spec.embedding_stride,
        mask_ratio=options.mask_ratio,
        mask_patch=options.mask_patch,
    )
    window = tuple(configuration["patch_size"])
    start = time.perf_counter()
    losses = pretrain(
        model,
        lambda seed: slice_windows(cases + test_cases, window, budget.batch_size, seed),
        budget,
        folder / PRETRAIN_STATE_FILE,
        device,
    )
    weights = folder / f"{plan.backbone}{PRETRAINED_WEIGHTS_SUFFIX}"
    record = {
        "dataset": dataset.name,
        "cases": len(cases),
        "test_cases": len(test_cases),
        "slices": sum(case.shape[1] for case in cases + test_cases),
        "input_size": plan.input_size,
        "budget": budget.__dict__,
        "device": str(device),
        "compute_dtype": precision_for(device).compute_dtype,
        "gradient_checkpointing": pretraining.gradient_checkpointing,
        **masking,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "seconds_this_run": round(time.perf_counter() - start, 1),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    base = save_pretrained_base(network.sam.cpu(), spec, weights, parent, record)
    plot_losses(losses, folder / PRETRAIN_CURVE_FILE)
    (folder / PRETRAIN_RECORD_FILE).write_text(
        json.dumps({**record, "sha256": base.sha256, "losses": losses}, indent=2)
    )
    (folder / PRETRAIN_STATE_FILE).unlink()
    return weights
