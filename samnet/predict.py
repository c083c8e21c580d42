"""``samnet_predict``: segment a folder of new images with the model the comparison chose.

The model is the best configuration in ``samnet_report/report.json`` (one SAM or nnU-Net
model, or an ensemble of two), or the models named with ``--model``. All the predicting is
nnU-Net's: ``nnUNetPredictor`` runs each model (averaging its folds), ``ensemble_folders``
averages the probabilities of several models, and the ``postprocessing.pkl`` that nnU-Net's
``determine_postprocessing`` wrote for the chosen configuration is applied by
``apply_postprocessing_to_folder``.

Inputs may be NIfTI, MHA, NRRD or PNG (also BMP, TIFF, JPEG), one file per channel named
``CASE_0000.ext`` as in nnU-Net, or one file per case. Files in a format other than the
training data's are converted into it first, keeping their geometry. Each segmentation is
written back in its input's format and geometry as ``OUT/CASE.ext`` (PNG for JPEG inputs:
labels must not be compressed lossily).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from samnet.datasets import dataset_id
from samnet.errors import SamnetError, cli_entry
from samnet.methods import Method
from samnet.paths import configure_environment, results_folder
from samnet.preprocessing.image_io import (
    NATURAL_IMAGE_ENDINGS,
    read_errors_named,
    read_image_info,
)

CHECKPOINT = "checkpoint_final.pth"
PREDICTION_RECORD = "samnet_prediction.json"
MEDICAL_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".gipl")
INPUT_ENDINGS = MEDICAL_ENDINGS + NATURAL_IMAGE_ENDINGS
LOSSY_ENDINGS = (".jpg", ".jpeg")
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Member:
    """One trained model: its ``TRAINER__PLANS__CONFIG`` results folder and the folds it averages."""

    folder: Path
    folds: tuple[int, ...]


@dataclass(frozen=True)
class Selection:
    """What predicts: the members (their probabilities averaged when several) and the postprocessing."""

    name: str
    members: tuple[Member, ...]
    postprocessing: Path | None
    postprocessing_note: str


@dataclass(frozen=True)
class Options:
    """How to predict: nnU-Net's device, test-time mirroring, checkpoint and worker processes."""

    device: str = "cpu"
    mirroring: bool = True
    checkpoint: str = CHECKPOINT
    processes: int = field(
        default_factory=lambda: int(os.environ.get("nnUNet_def_n_proc", "1"))
    )


# (member, lists of input files per case, output paths without ending, save probabilities, options)
MemberRunner = Callable[[Member, list[list[str]], list[str], bool, Options], None]


def find_trained_dataset(identifier: str) -> Path:
    """``nnUNet_results/DatasetNNN_Name`` for ``4``, ``Dataset004`` or ``Dataset004_Hippocampus``."""
    number = dataset_id(identifier)
    root = results_folder()
    matches = sorted(
        p
        for p in root.glob(f"Dataset{number:03d}_*")
        if p.is_dir() and not p.name.startswith(".")
    )
    if len(matches) != 1:
        found = ", ".join(m.name for m in matches) or "none"
        raise SamnetError(
            root,
            f"needs exactly one trained dataset with id {number} (found: {found})",
            "train it first (samnet_plan_and_train), or point nnUNet_results at its models",
        )
    return matches[0]


def method_folder_name(spec: str) -> str:
    """``TRAINER:PLANS:CONFIG`` (``--model``) as nnU-Net's folder name ``TRAINER__PLANS__CONFIG``."""
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts):
        raise SamnetError(
            None,
            f"--model '{spec}' is not 'best' or TRAINER:PLANS:CONFIG",
            "e.g. --model nnUNetTrainer:nnUNetPlans:2d (the folder "
            "nnUNetTrainer__nnUNetPlans__2d in the dataset's results)",
        )
    return Method(*parts).folder_name


def trained_folds(
    folder: Path, requested: list[int] | None, checkpoint: str
) -> tuple[int, ...]:
    """``requested`` folds, each with a checkpoint, or every fold of ``folder`` that has one."""
    if requested is None:
        found = sorted(
            int(p.parent.name.removeprefix("fold_"))
            for p in folder.glob(f"fold_*/{checkpoint}")
            if p.parent.name.removeprefix("fold_").isdigit()
        )
        if found:
            return tuple(found)
        raise SamnetError(
            folder,
            f"no fold_K/{checkpoint} here: the model is not trained",
            "train it first: samnet_plan_and_train DATASET",
        )
    for fold in requested:
        if not (folder / f"fold_{fold}" / checkpoint).is_file():
            raise SamnetError(
                folder / f"fold_{fold}" / checkpoint,
                "is missing: this fold is not trained (to the end)",
                "train it, or choose trained folds with --folds",
            )
    return tuple(requested)


def best_configuration(dataset: Path) -> tuple[str, list[str], list[int]]:
    """The report's best configuration: its name, member folders and cross-validation folds."""
    from samnet.report import REPORT_FOLDER

    report_file = dataset / REPORT_FOLDER / "report.json"
    if not report_file.is_file():
        raise SamnetError(
            report_file,
            "is missing, so there is no best configuration yet",
            f"run samnet_compare {dataset.name}, or name a model with --model TRAINER:PLANS:CONFIG",
        )
    selection = json.loads(report_file.read_text())["best_configuration"]
    if selection["best"] is None:
        raise SamnetError(
            report_file,
            f"names no best configuration ({selection['sentence']})",
            "validate every method on the same folds and rerun samnet_compare, "
            "or name a model with --model",
        )
    members = next(
        c["members"] for c in selection["candidates"] if c["name"] == selection["best"]
    )
    return selection["best"], members, selection["folds"]


def postprocessing_candidates(
    dataset: Path, members: list[str], folds: list[int]
) -> list[Path]:
    """Where nnU-Net's ``determine_postprocessing`` leaves ``postprocessing.pkl`` for these members.

    A single model: its ``crossval_results_folds_X`` (``find_best_configuration`` and
    ``nnUNetv2_accumulate_crossval_results``); an ensemble: samnet's ``samnet_ensembles/a+b``
    and nnU-Net's ``ensembles/ensemble___a___b___X``.
    """
    folds_text = "_".join(str(fold) for fold in folds)
    if len(members) == 1:
        return [dataset / members[0] / f"crossval_results_folds_{folds_text}"]
    from samnet.report_ensembles import ENSEMBLES_FOLDER

    return [
        dataset / ENSEMBLES_FOLDER / "+".join(members),
        dataset / "ensembles" / f"ensemble___{'___'.join(members)}___{folds_text}",
    ]


def find_postprocessing(
    dataset: Path, members: list[str], folds: list[int]
) -> tuple[Path | None, str]:
    """The ``postprocessing.pkl`` determined for these members, or None and why, with the fix."""
    folders = postprocessing_candidates(dataset, members, folds)
    for folder in folders:
        if (folder / "postprocessing.pkl").is_file():
            return (
                folder / "postprocessing.pkl",
                "determined by nnU-Net on cross-validation",
            )
    looked = ", ".join(str(folder / "postprocessing.pkl") for folder in folders)
    return None, (
        f"none: no postprocessing.pkl determined for this configuration (looked for {looked}); "
        "predicting without it. To have one: nnUNetv2_determine_postprocessing -i FOLDER "
        "-ref $nnUNet_preprocessed/DATASET/gt_segmentations on the configuration's "
        "cross-validation predictions (nnUNetv2_find_best_configuration does both)"
    )


def select_models(
    dataset: Path,
    models: list[str],
    folds: list[int] | None = None,
    checkpoint: str = CHECKPOINT,
) -> Selection:
    """The report's best configuration (``models == ["best"]``) or the ``TRAINER:PLANS:CONFIG`` models."""
    if models == ["best"]:
        name, member_names, cv_folds = best_configuration(dataset)
    elif "best" in models:
        raise SamnetError(
            None,
            "--model best cannot be combined with other models",
            "give either best or one or more TRAINER:PLANS:CONFIG",
        )
    else:
        member_names = [method_folder_name(spec) for spec in models]
        name, cv_folds = "+".join(member_names), None
    members = []
    for member_name in member_names:
        folder = dataset / member_name
        if not (folder / "plans.json").is_file():
            raise SamnetError(
                folder,
                "is not a trained model folder (no plans.json)",
                f"choose one of: {', '.join(p.name for p in sorted(dataset.glob('*__*__*')))}",
            )
        members.append(Member(folder, trained_folds(folder, folds, checkpoint)))
    postprocessing, note = find_postprocessing(
        dataset, member_names, cv_folds or list(members[0].folds)
    )
    return Selection(name, tuple(members), postprocessing, note)


def file_ending(path: Path) -> str | None:
    """The image ending of ``path`` (``.nii.gz``, ``.png``, ...) in lower case, or None."""
    name = path.name.lower()
    return next((e for e in INPUT_ENDINGS if name.endswith(e)), None)


def case_name(path: Path) -> str:
    return path.name[: -len(file_ending(path))]


def cases_in_folder(folder: Path, num_channels: int) -> dict[str, list[Path]]:
    """The cases of an input folder, by case id: their files in channel order.

    nnU-Net's naming (``CASE_0000.ext``, ``CASE_0001.ext``, ...) when every image file has it
    and every case has all channels (or one file each, holding them all); otherwise each
    file is a case of its own.
    """
    if not folder.is_dir():
        raise SamnetError(
            folder, "is not a folder", "give the folder that holds the images (-i)"
        )
    visible = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in visible if p.is_file() and file_ending(p)]
    skipped = [p.name for p in visible if p not in files]
    if skipped:
        print(
            f"samnet: skipping {len(skipped)} non-image entries: {', '.join(skipped)}"
        )
    if not files:
        raise SamnetError(
            folder,
            f"holds no images ({', '.join(INPUT_ENDINGS)})",
            "give the folder of images to segment",
        )
    matches = [_CHANNEL_FILE.match(case_name(p)) for p in files]
    if all(matches):
        grouped: dict[str, dict[int, Path]] = {}
        for match, path in zip(matches, files):
            grouped.setdefault(match["case"], {})[int(match["channel"])] = path
        channel_sets = {frozenset(channels) for channels in grouped.values()}
        if channel_sets <= {frozenset(range(num_channels)), frozenset({0})}:
            return {
                case: [channels[k] for k in sorted(channels)]
                for case, channels in grouped.items()
            }
    names = [case_name(p) for p in files]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SamnetError(
            folder,
            f"holds several files for case(s) {', '.join(repeated)} (in different formats)",
            "keep one file per case: the segmentation is named after the case",
        )
    return {name: [p] for name, p in zip(names, files)}


def _header(path: Path) -> tuple[int, int]:
    """Dimension and components per pixel of a medical image, from its header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with read_errors_named(path):
        reader.ReadImageInformation()
    return reader.GetDimension(), reader.GetNumberOfComponents()


def needs_conversion(files: list[Path], dataset_ending: str) -> bool:
    """Whether nnU-Net's reader of the training data cannot take ``files`` as they are.

    It can when they are in the training data's format and, for medical formats, each
    holds one 2D or 3D channel: nnU-Net reads 4D and multi-component files but cannot
    write their segmentations.
    """
    if any(file_ending(f) != dataset_ending for f in files):
        return True
    if dataset_ending in NATURAL_IMAGE_ENDINGS:
        return False
    return any(_header(f) not in ((2, 1), (3, 1)) for f in files)


def _scalar_channels(image: sitk.Image) -> list[sitk.Image]:
    """The channels of a medical image (volumes of a 4D one, components of a vector one)."""
    volumes = [image]
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        volumes = [
            sitk.Extract(image, [*size[:3], 0], [0, 0, 0, t]) for t in range(size[3])
        ]
    return [
        sitk.VectorIndexSelectionCast(volume, k)
        if volume.GetNumberOfComponentsPerPixel() > 1
        else volume
        for volume in volumes
        for k in range(volume.GetNumberOfComponentsPerPixel())
    ]


def convert_case(
    case: str, files: list[Path], dataset_ending: str, staging: Path
) -> list[Path]:
    """Write a case as ``CASE_XXXX<dataset_ending>`` files into ``staging``, geometry kept.

    Medical formats become one scalar file per channel; 2D images stay 2D images (an RGB
    PNG stays one RGB file, as nnU-Net's 2D reader takes it).
    """
    natural = dataset_ending in NATURAL_IMAGE_ENDINGS
    written: list[Path] = []
    for path in files:
        if natural and file_ending(path) not in NATURAL_IMAGE_ENDINGS:
            raise SamnetError(
                path,
                f"is a {file_ending(path)} image, but the model was trained on "
                f"{dataset_ending} 2D images",
                f"give 2D images ({', '.join(NATURAL_IMAGE_ENDINGS)}) to this model",
            )
        with read_errors_named(path):
            image = sitk.ReadImage(str(path))
        for channel in [image] if natural else _scalar_channels(image):
            target = staging / f"{case}_{len(written):04d}{dataset_ending}"
            try:
                sitk.WriteImage(channel, str(target), True)
            except RuntimeError as error:
                raise SamnetError(
                    path,
                    f"cannot be stored as {dataset_ending}, the training data's format "
                    f"({str(error).strip().splitlines()[-1]})",
                    f"convert it to {dataset_ending} yourself, as the training images were",
                ) from error
            written.append(target)
    return written


def check_channels(
    case: str, files: list[Path], given: list[Path], channel_names: list[str]
) -> None:
    """A case (``files`` as the model reads them, ``given`` by the user) holds the model's channels."""
    found = sum(read_image_info(f).channels for f in files)
    if found != len(channel_names):
        raise SamnetError(
            given[0],
            f"case {case} has {found} channel(s) in {len(given)} file(s), but the model "
            f"takes {len(channel_names)} ({', '.join(channel_names)})",
            "give one file per channel named CASE_0000, CASE_0001, ... (nnU-Net's naming) "
            "or one file per case holding all channels",
        )


def write_back(
    segmentation: Path, inputs: list[Path], output: Path, case: str, converted: bool
) -> Path:
    """Put a case's segmentation into ``output`` in the format and geometry of its input."""
    ending = file_ending(inputs[0])
    if not converted:
        return Path(shutil.move(segmentation, output / f"{case}{ending}"))
    labels = sitk.ReadImage(str(segmentation))
    if ending in MEDICAL_ENDINGS:
        # the input's own header, not the converted copy's: NIfTI keeps geometry in float32
        info = read_image_info(inputs[0])
        if tuple(labels.GetSize()) != tuple(info.size):
            raise SamnetError(
                inputs[0],
                f"has size {info.size} but its segmentation {labels.GetSize()}",
                "report this: nnU-Net writes segmentations on the input's grid",
            )
        labels.SetSpacing(info.spacing)
        labels.SetOrigin(info.origin)
        labels.SetDirection(info.direction)
    target = output / f"{case}{'.png' if ending in LOSSY_ENDINGS else ending}"
    sitk.WriteImage(labels, str(target), True)
    return target


def run_with_nnunet(
    member: Member,
    inputs: list[list[str]],
    outputs: list[str],
    save_probabilities: bool,
    options: Options,
) -> None:
    """nnU-Net's predictor on one model (its folds averaged), with a progress bar over cases.

    Writes ``OUTPUT<ending>`` per case and, with ``save_probabilities``, the ``.npz`` and
    ``.pkl`` that nnU-Net's ensembling reads. nnU-Net's own chatter is kept out of the way
    and shown only when it fails.
    """
    import torch
    from nnunetv2.inference.data_iterators import preprocessing_iterator_fromfiles
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from tqdm import tqdm

    device = torch.device(options.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            predictor = nnUNetPredictor(
                use_mirroring=options.mirroring, device=device, allow_tqdm=False
            )
            predictor.initialize_from_trained_model_folder(
                str(member.folder), member.folds, options.checkpoint
            )
            iterator = preprocessing_iterator_fromfiles(
                inputs,
                None,
                outputs,
                predictor.plans_manager,
                predictor.dataset_json,
                predictor.configuration_manager,
                options.processes,
                device.type == "cuda",
            )
            with tqdm(
                iterator, total=len(inputs), desc=member.folder.name, unit="case"
            ) as cases:
                predictor.predict_from_data_iterator(
                    cases, save_probabilities, options.processes
                )
    except BaseException:
        print(log.getvalue(), file=sys.stderr)
        raise


def average_members(
    folders: list[Path], target: Path, dataset_json: dict, plans: dict, processes: int
) -> None:
    """nnU-Net's ``ensemble_folders``: the mean of the members' probabilities, then argmax."""
    from nnunetv2.ensembling.ensemble import ensemble_folders

    ensemble_folders(
        [str(folder) for folder in folders],
        str(target),
        save_merged_probabilities=False,
        num_processes=processes,
        dataset_json_file_or_dict=dataset_json,
        plans_json_file_or_dict=plans,
    )


def postprocess(
    folder: Path,
    target: Path,
    postprocessing: Path,
    dataset_json: dict,
    plans: dict,
    processes: int,
) -> None:
    """nnU-Net's ``apply_postprocessing_to_folder`` with the functions in ``postprocessing.pkl``."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.postprocessing.remove_connected_components import (
        apply_postprocessing_to_folder,
    )

    functions, arguments = load_pickle(str(postprocessing))
    apply_postprocessing_to_folder(
        str(folder), str(target), functions, arguments, plans, dataset_json, processes
    )


def training_dataset_json(selection: Selection) -> dict:
    """The ``dataset.json`` nnU-Net copied into the (first) model folder."""
    return json.loads((selection.members[0].folder / "dataset.json").read_text())


def channel_names(dataset_json: dict) -> list[str]:
    channels = dataset_json.get("channel_names") or dataset_json["modality"]
    return [channels[key] for key in sorted(channels, key=int)]


def predict_cases(
    cases: dict[str, list[Path]],
    output: Path,
    selection: Selection,
    options: Options,
    run_member: MemberRunner = run_with_nnunet,
) -> dict:
    """Segment ``cases`` (id -> channel files) into the folder ``output``; return a record.

    Each case becomes ``output/CASE.ext`` in its input's format and geometry. Work files go
    to a hidden temporary sibling of ``output``, removed at the end.
    """
    dataset_json = training_dataset_json(selection)
    plans = json.loads((selection.members[0].folder / "plans.json").read_text())
    ending = dataset_json["file_ending"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(
        prefix=".samnet_predict.", dir=output.parent
    ) as temporary:
        work = Path(temporary)
        (work / "inputs").mkdir()
        inputs, converted = {}, set()
        for case, files in cases.items():
            inputs[case] = files
            if needs_conversion(files, ending):
                inputs[case] = convert_case(case, files, ending, work / "inputs")
                converted.add(case)
            check_channels(case, inputs[case], files, channel_names(dataset_json))
        if converted:
            print(
                f"samnet: converted {len(converted)} case(s) to {ending} for the model"
            )
        lists = [[str(f) for f in inputs[case]] for case in cases]
        folders = []
        for index, member in enumerate(selection.members):
            folders.append(work / f"model_{index}")
            folders[-1].mkdir()
            truncated = [str(folders[-1] / case) for case in cases]
            run_member(member, lists, truncated, len(selection.members) > 1, options)
        segmentations = folders[0]
        if len(folders) > 1:
            segmentations = work / "ensemble"
            average_members(
                folders, segmentations, dataset_json, plans, options.processes
            )
        if selection.postprocessing is not None:
            postprocess(
                segmentations,
                work / "postprocessed",
                selection.postprocessing,
                dataset_json,
                plans,
                options.processes,
            )
            segmentations = work / "postprocessed"
        written = [
            write_back(
                segmentations / f"{case}{ending}",
                files,
                output,
                case,
                case in converted,
            )
            for case, files in cases.items()
        ]
    seconds = time.perf_counter() - start
    return {
        "configuration": selection.name,
        "models": [
            {"model": m.folder.name, "folds": list(m.folds)} for m in selection.members
        ],
        "postprocessing": None
        if selection.postprocessing is None
        else str(selection.postprocessing),
        "postprocessing_note": selection.postprocessing_note,
        "device": options.device,
        "mirroring": options.mirroring,
        "checkpoint": options.checkpoint,
        "cases": len(written),
        "converted_cases": len(converted),
        "seconds": round(seconds, 2),
        "seconds_per_case": round(seconds / len(written), 2),
        "outputs": [p.name for p in written],
    }


def describe(selection: Selection) -> str:
    """What will predict, for the user, in a few lines."""
    count = len(selection.members)
    kind = f"ensemble of {count} models" if count > 1 else "single model"
    lines = [f"samnet: predicting with {selection.name} ({kind})"]
    for member in selection.members:
        folds = " ".join(str(f) for f in member.folds)
        lines.append(f"  {member.folder.name}: folds {folds}")
    used = selection.postprocessing
    lines.append(f"  postprocessing: {used}, " if used else "  postprocessing: ")
    lines[-1] += selection.postprocessing_note
    return "\n".join(lines)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options samnet_predict and samnet_export_msd share: which model, folds, device."""
    parser.add_argument(
        "-d", "--dataset", required=True, help="DatasetNNN, its full name or its id"
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=["best"],
        metavar="best|TRAINER:PLANS:CONFIG",
        help="'best' (default): the configuration samnet_compare chose, single model or "
        "ensemble; or one or more TRAINER:PLANS:CONFIG, averaged when several",
    )
    parser.add_argument(
        "--folds",
        nargs="+",
        type=int,
        help="folds to average (default: every fold with a final checkpoint)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--checkpoint",
        default=CHECKPOINT,
        help=f"checkpoint file (default {CHECKPOINT})",
    )
    parser.add_argument(
        "--no-mirroring",
        action="store_true",
        help="skip test-time mirroring (faster; validation used it where the model allows it)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output"
    )


def selection_and_options(args: argparse.Namespace) -> tuple[Path, Selection, Options]:
    """The trained dataset folder, the models and the options the command line asks for."""
    configure_environment()
    dataset = find_trained_dataset(args.dataset)
    selection = select_models(dataset, args.model, args.folds, args.checkpoint)
    options = Options(
        device=resolve_device(args.device),
        mirroring=not args.no_mirroring,
        checkpoint=args.checkpoint,
    )
    return dataset, selection, options


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samnet_predict",
        description="Segment a folder of images (NIfTI, MHA, NRRD, PNG) with the best model "
        "samnet found, or the models you name; outputs in each input's format and geometry.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "-i", "--input", type=Path, required=True, help="folder of images"
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="folder for the segmentations"
    )
    args = parser.parse_args(argv)
    from samnet.preprocessing.atomic import atomic_folder

    _, selection, options = selection_and_options(args)
    print(describe(selection))
    channels = channel_names(training_dataset_json(selection))
    cases = cases_in_folder(args.input, len(channels))
    with atomic_folder(args.output, args.overwrite) as folder:
        record = predict_cases(cases, folder, selection, options)
        (folder / PREDICTION_RECORD).write_text(json.dumps(record, indent=2))
    print(
        f"samnet: {record['cases']} segmentation(s) in {args.output} "
        f"({record['seconds']:.0f} s, {record['seconds_per_case']:.1f} s per case on "
        f"{options.device}); details in {PREDICTION_RECORD}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
