"""Which SAM arm pays: variants of the CPU plan on one fold, each at the same budget.

    nice -n 5 .venv/bin/python benchmarks/sam_ablation.py --dataset hippocampus
        [--fold 0 --epochs 20 --iterations-per-epoch 50 --arms plan cached_views ...]
        [--busy "what else ran"] [--overwrite]

Every arm is the planner's own plan with some decisions fixed (``ARMS``: the overrides a
user would pass to ``samnet_plan``, e.g. ``--cached-views 2``), trained through the
trainer its plan names, on the fold's training cases, with the dataset's batch
(``common.DATASETS``) and ``--epochs`` x ``--iterations-per-epoch`` steps (``longer``
doubles the epochs). ``context_slices`` trains on a 2.5D copy of a 3D dataset
(``context_dataset``). Each arm's plans file is its own (``samnetPlans_<arm>``); arms with
the same encoder input share one embedding cache (``image_branch``'s also stores the
windows, so it builds its own). The validation is nnU-Net's, on the
fold's validation cases. The reference arm also records how far the encoder is from
commuting with flips (``flip_consistency``): why augmentation must come before the
encoder, not be applied to cached embeddings.

Writes ``benchmarks/results/sam_ablation_<dataset>_<cpu|gpu>.json`` after every arm
(Dice per class and per case, mean foreground Dice, its paired difference to the
``plan`` arm, seconds per step, embedding cache seconds and disk, validation seconds,
what shared the machine) and a PNG of Dice and seconds per step beside it. An arm already
in the JSON with the same settings is skipped unless ``--overwrite``; an interrupted arm
resumes from its last epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from common import (
    DATASETS,
    RESULTS,
    ensure_raw,
    machine,
    plan_sam_variant,
    work_environment,
    write_result,
)

from samnet.core.layout import CACHE_FOLDER, CACHE_INFO_FILE, FOLD_STATS_FILE
from samnet.evaluation.plots import figure_file


@dataclass(frozen=True)
class Arm:
    """One variant of the CPU plan.

    Attributes:
      title: what the arm is, for the table.
      overrides: planner decisions fixed as ``samnet_plan --<name> VALUE`` would.
      epochs_factor: the arm's epochs are ``--epochs`` times this.
      context_slices: train on ``context_dataset``'s copy of a 3D dataset (each slice with
        its two neighbours as SAM's three input channels: 2.5D input).
    """

    title: str
    overrides: dict = dataclasses.field(default_factory=dict)
    epochs_factor: int = 1
    context_slices: bool = False


ARMS = {
    "plan": Arm("the CPU plan (frozen cached encoder, decoder trained)"),
    "encoder_lora": Arm(
        "LoRA in the encoder's last stage on the prefix cache, and the decoder",
        {"encoder_mode": "prefix_cached", "peft": "lora"},
    ),
    "longer": Arm("the CPU plan, twice the steps", epochs_factor=2),
    "cached_views": Arm(
        "the CPU plan with 2 augmented views of every window cached (nnU-Net's "
        "training transforms before the encoder)",
        {"cached_views": 2},
    ),
    "context_slices": Arm(
        "the CPU plan on 2.5D input (the slices below, at and above as R, G, B)",
        context_slices=True,
    ),
    "image_branch": Arm(
        "the CPU plan with a full-resolution image branch into the mask features "
        "(SAM-HQ-like)",
        {"image_branch": True},
    ),
}
# The derived 2.5D dataset's id: this plus the source's.
CONTEXT_ID_OFFSET = 900
REFERENCE_ARM = "plan"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--busy",
        help="what else ran on the machine while this invocation trained (recorded with "
        "each arm it trains); omit when nothing did",
    )
    parser.add_argument("--overwrite", action="store_true", help="retrain done arms")
    return parser.parse_args()


def arm_settings(args: argparse.Namespace, arm: Arm) -> dict:
    """What an arm's result depends on besides its overrides: fold and budget."""
    real = DATASETS[args.dataset]
    return {
        "fold": args.fold,
        "epochs": args.epochs * arm.epochs_factor,
        "iterations_per_epoch": args.iterations_per_epoch,
        "batch_size": real.batch_size,
        "overrides": arm.overrides,
    }


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def cache_record(preprocessed: Path, stats: dict) -> dict | None:
    """Build seconds and disk of the embedding cache(s) the arm trained from (its augmented
    views included); None: no cache."""
    if "embedding_cache_folders" not in stats:
        return None
    folders = [
        preprocessed / CACHE_FOLDER / name for name in stats["embedding_cache_folders"]
    ]
    first = json.loads((folders[0] / CACHE_INFO_FILE).read_text())
    return {
        "seconds": stats["embedding_cache_seconds"],
        "views": len(folders),
        "windows_per_view": first["windows"],
        "disk_bytes": sum(folder_bytes(folder) for folder in folders),
        "prefix_stages": first["key_inputs"]["prefix_stages"],
    }


def paired_difference(arm: dict, reference: dict) -> dict | None:
    """Mean and standard error of the arm's per-case Dice minus the reference arm's."""
    ours, theirs = arm["dice_per_case"], reference["dice_per_case"]
    differences = [
        ours[c] - theirs[c]
        for c in sorted(set(ours) & set(theirs))
        if ours[c] is not None and theirs[c] is not None
    ]
    if len(differences) < 2:
        return None
    return {
        "mean": statistics.fmean(differences),
        "standard_error": statistics.stdev(differences) / len(differences) ** 0.5,
        "cases_better": sum(d > 0 for d in differences),
        "cases": len(differences),
    }


def context_dataset(source: Path, target: Path, axis: int) -> None:
    """Write a copy of the single-channel nnU-Net raw dataset ``source`` to ``target``
    whose images have three channels: each slice along ``axis`` (of SimpleITK's array,
    nnU-Net's order) preceded and followed by its neighbours, edge slices repeated.

    nnU-Net's 2d configuration slicing ``axis`` then hands the SAM encoder the slices
    below, at and above as its R, G and B (three channels pass the input adapter
    unchanged). Labels and case ids are the source's, so nnU-Net's splits are too.
    """
    import numpy as np
    import SimpleITK as sitk

    from samnet.core.atomic import atomic_folder

    description = json.loads((source / "dataset.json").read_text())
    if len(description["channel_names"]) != 1:
        raise SystemExit(f"{source}: 2.5D input is built from one channel only")
    modality = description["channel_names"]["0"]
    ending = description["file_ending"]
    with atomic_folder(target) as folder:
        (folder / "imagesTr").mkdir()
        shutil.copytree(source / "labelsTr", folder / "labelsTr")
        for image_file in sorted((source / "imagesTr").glob(f"*_0000{ending}")):
            image = sitk.ReadImage(str(image_file))
            volume = sitk.GetArrayFromImage(image)
            last = volume.shape[axis] - 1
            index = np.arange(last + 1)
            case = image_file.name[: -len(f"_0000{ending}")]
            for channel, shift in enumerate((-1, 0, 1)):
                shifted = np.take(volume, np.clip(index + shift, 0, last), axis=axis)
                written = sitk.GetImageFromArray(shifted)
                written.CopyInformation(image)
                sitk.WriteImage(
                    written,
                    str(folder / "imagesTr" / f"{case}_{channel:04d}{ending}"),
                    useCompression=True,
                )
        description["channel_names"] = {"0": modality, "1": modality, "2": modality}
        description["name"] = f"{description['name']}25D"
        (folder / "dataset.json").write_text(json.dumps(description, indent=2))


def arm_dataset(real_name: str, arm: Arm):
    """The dataset an arm trains on, fingerprinted: the benchmark's, or its 2.5D copy
    (``context_dataset``, written on first use)."""
    from samnet.core.datasets import Dataset
    from samnet.pipeline.planning import ensure_fingerprint
    from samnet.planners.fingerprint import sam_fingerprint

    dataset = Dataset.resolve(real_name)
    ensure_fingerprint(dataset, overwrite=False)
    if not arm.context_slices:
        return dataset
    fingerprint = sam_fingerprint(
        dataset.raw,
        json.loads((dataset.preprocessed / "dataset_fingerprint.json").read_text()),
    )
    if fingerprint.dimensions != 3:
        raise SystemExit(f"{real_name}: 2.5D input needs a 3D dataset")
    derived_name = (
        f"Dataset{CONTEXT_ID_OFFSET + dataset.id:03d}_"
        f"{dataset.name.split('_', 1)[1]}25D"
    )
    target = dataset.raw.parent / derived_name
    if not target.exists():
        context_dataset(dataset.raw, target, fingerprint.slicing_axis)
    derived = Dataset.resolve(derived_name)
    ensure_fingerprint(derived, overwrite=False)
    return derived


def train_arm(args: argparse.Namespace, name: str, arm: Arm, overwrite: bool) -> dict:
    """Plan, preprocess, train and validate one arm; its numbers."""
    # nnunetv2 reads nnUNet_* variables at import: main() sets them first.
    import torch

    from samnet.core.layout import SAM_CONFIGURATION
    from samnet.core.methods import sam_method
    from samnet.evaluation.results import read_cases
    from samnet.evaluation.stats import FOREGROUND
    from samnet.pipeline.options import BudgetOptions
    from samnet.pipeline.plan_and_train import budget_for
    from samnet.pipeline.train_fold import fold_folder, train_fold

    dataset = arm_dataset(DATASETS[args.dataset].dataset, arm)
    plans_name = plan_sam_variant(dataset, f"samnetPlans_{name}", arm.overrides)
    plans = json.loads(dataset.plans_file(plans_name).read_text())
    sam_block = plans["configurations"][SAM_CONFIGURATION]["sam"]
    method = sam_method(plans_name, SAM_CONFIGURATION, sam_block)
    settings = arm_settings(args, arm)
    asked = BudgetOptions(
        epochs=settings["epochs"],
        iterations_per_epoch=settings["iterations_per_epoch"],
        batch_size=settings["batch_size"],
    )
    device = torch.device(args.device)
    budget = budget_for(method, dataset, asked, on_cpu=device.type == "cpu")
    summary_file = train_fold(
        dataset.name,
        method,
        args.fold,
        budget,
        device,
        overwrite=overwrite,
    )
    summary = json.loads(summary_file.read_text())
    stats = json.loads(
        (fold_folder(dataset.name, method, args.fold) / FOLD_STATS_FILE).read_text()
    )
    description = json.loads((dataset.preprocessed / "dataset.json").read_text())
    labels = {str(v): k for k, v in description["labels"].items()}
    # Each case's mean foreground Dice as the report scores it (None: no class defined).
    cases = read_cases(summary_file, list(summary["mean"]), description["file_ending"])
    return {
        "title": arm.title,
        "settings": settings,
        "dataset": dataset.name,
        "method": method.folder_name,
        "sam_plan": {
            key: sam_block[key]
            for key in ("backbone", "input_size", "encoder_mode", "peft", "optimizer")
        },
        "optimizer_steps": budget.optimizer_steps,
        "dice": {
            labels[label]: metrics["Dice"] for label, metrics in summary["mean"].items()
        },
        "dice_mean_foreground": summary["foreground_mean"]["Dice"],
        "dice_per_case": {case["case"]: case["dice"][FOREGROUND] for case in cases},
        "train_seconds": stats["train_seconds"],
        "seconds_per_step": stats["train_seconds"] / budget.optimizer_steps,
        "validation_seconds": stats["validation_seconds"],
        "validation_cases": len(summary["metric_per_case"]),
        "embedding_cache": cache_record(dataset.preprocessed, stats),
        "trainable_parameters": stats["trainable_parameters"],
        "machine_busy_with": args.busy,
        # Measured once, with the reference arm's encoder.
        "flip_consistency": flip_consistency(dataset, sam_block)
        if name == REFERENCE_ARM
        else None,
    }


def flip_consistency(dataset, sam_block: dict, images: int = 8) -> dict:
    """How far flipping the encoder's output is from encoding the flipped image.

    Augmenting cached embeddings "consistently with the labels" (flipping embedding and
    label together) only imitates augmentation if the encoder commutes with the flip. The
    cosine similarity of flip(E(x)) and E(flip(x)) over ``images`` middle slices answers
    that; beside it, the similarity of two different slices' embeddings, for scale.
    """
    import numpy as np
    import SimpleITK as sitk
    import torch
    import torch.nn.functional as F

    from samnet.models.network import build_network

    network, _ = build_network(
        sam_block["backbone"], 1, 2, sam_block["input_size"], sam_block["checkpoint"]
    )
    network.eval()
    ending = json.loads((dataset.raw / "dataset.json").read_text())["file_ending"]
    slices = []
    for image_file in sorted((dataset.raw / "imagesTr").glob(f"*_0000{ending}"))[
        :images
    ]:
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(image_file)))
        middle = volume[volume.shape[0] // 2] if volume.ndim == 3 else volume
        middle = middle.astype(np.float32)
        slices.append(
            torch.from_numpy((middle - middle.mean()) / (middle.std() + 1e-6))
        )
    size = sam_block["input_size"]
    x = torch.cat(
        [
            F.interpolate(s[None, None], size=(size, size), mode="bilinear")
            for s in slices
        ]
    )
    with torch.no_grad():
        encoded = network.sam.image_encoder(network.input_adapter(x)).flatten(1)
        similarity = {}
        for name, axes in (
            ("left_right", (-1,)),
            ("up_down", (-2,)),
            ("both", (-2, -1)),
        ):
            flipped = network.sam.image_encoder(network.input_adapter(x.flip(axes)))
            similarity[name] = (
                F.cosine_similarity(encoded, flipped.flip(axes).flatten(1))
                .mean()
                .item()
            )
        similarity["another_slice"] = (
            F.cosine_similarity(encoded, encoded.roll(1, dims=0)).mean().item()
        )
    return {"images": len(slices), "mean_cosine_similarity": similarity}


def summarize(result: dict) -> None:
    """Each arm's paired difference to the reference arm, recomputed from the per-case Dice."""
    reference = result["arms"].get(REFERENCE_ARM)
    for name, arm in result["arms"].items():
        arm["minus_plan"] = (
            None
            if reference is None or name == REFERENCE_ARM
            else paired_difference(arm, reference)
        )


def plot(result: dict, path: Path) -> None:
    """Mean foreground Dice and seconds per step of every arm, side by side."""
    names = list(result["arms"])
    arms = [result["arms"][n] for n in names]
    positions = list(range(len(names)))
    size = (10, 0.5 * len(names) + 1.8)
    with figure_file(path, 2, size, share_y=True) as (dice_axis, time_axis):
        dice_axis.barh(positions, [a["dice_mean_foreground"] for a in arms])
        dice_axis.set_yticks(positions, names)
        dice_axis.set_xlabel("mean foreground Dice (fold validation)")
        low = min(a["dice_mean_foreground"] for a in arms)
        dice_axis.set_xlim(max(0.0, low - 0.05), 1.0)
        time_axis.barh(
            positions, [a["seconds_per_step"] for a in arms], color="tab:orange"
        )
        busy = any(a.get("machine_busy_with") for a in arms)
        time_axis.set_xlabel(
            "seconds per optimizer step"
            + (" (machine shared: see JSON)" if busy else "")
        )
        dice_axis.figure.suptitle(
            f"SAM arms, {result['dataset']} fold {result['fold']} "
            f"({result['machine']['cpu']})"
        )


def main() -> None:
    args = arguments()
    environment = work_environment("sam_ablation")
    real = DATASETS[args.dataset]
    ensure_raw(real, environment)
    # nnunetv2, imported by the arms, reads its folders from here at import
    os.environ.update(environment)
    name = f"sam_ablation_{args.dataset}_{'gpu' if args.device == 'cuda' else 'cpu'}"
    path = RESULTS / f"{name}.json"
    result = (
        json.loads(path.read_text())
        if path.exists()
        else {"benchmark": "sam_ablation", "dataset": real.dataset, "arms": {}}
    )
    result["fold"] = args.fold
    result["metric"] = "mean foreground Dice of the fold's validation cases (nnU-Net's)"
    for arm_name in args.arms:
        arm = ARMS[arm_name]
        done = result["arms"].get(arm_name)
        if (
            done is not None
            and done["settings"] == arm_settings(args, arm)
            and not args.overwrite
        ):
            print(f"{arm_name}: done", flush=True)
            continue
        print(f"{arm_name}: {arm.title}", flush=True)
        result["arms"][arm_name] = train_arm(
            args, arm_name, arm, args.overwrite or done is not None
        )
        result["machine"] = machine()
        summarize(result)
        write_result(name, result)
        plot(result, RESULTS / f"{name}.png")


if __name__ == "__main__":
    sys.exit(main())
