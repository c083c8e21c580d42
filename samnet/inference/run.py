"""Predicting with nnU-Net's own machinery: its predictor, ensembling and postprocessing.

``nnUNetPredictor`` runs each model (averaging its folds; a frozen SAM encoder runs once
for all of them, ``samnet.models.shared_encoder``), ``ensemble_folders`` averages the
probabilities of several models, and ``apply_postprocessing_to_folder`` applies the
postprocessing of the selection (read from nnU-Net's ``postprocessing.json``). ``predict_cases`` does all of it for a set of cases,
from the user's files to segmentations in their format and geometry.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from samnet.core.atomic import scratch_folder
from samnet.core.errors import SamnetError
from samnet.core.layout import FINAL_CHECKPOINT
from samnet.inference.file_formats import stage_inputs, write_back
from samnet.inference.selection import (
    Member,
    Selection,
    channel_names,
    training_dataset_json,
)


@dataclass(frozen=True)
class Options:
    """How to predict: nnU-Net's device, test-time mirroring, checkpoint and worker processes."""

    device: str = "cpu"
    mirroring: bool = True
    checkpoint: str = FINAL_CHECKPOINT
    processes: int = field(
        default_factory=lambda: int(os.environ.get("nnUNet_def_n_proc", "1"))
    )


# (member, lists of input files per case, output paths without ending, save probabilities, options)
MemberRunner = Callable[[Member, list[list[str]], list[str], bool, Options], None]


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
    # torch is heavy (keeps the commands' --help fast); nnunetv2 reads the nnUNet_*
    # variables at import, so it comes after configure_environment().
    import torch
    from nnunetv2.inference.data_iterators import preprocessing_iterator_fromfiles
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from samnet.models.shared_encoder import share_frozen_encoder

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
            share_frozen_encoder(predictor)
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
    # nnunetv2 reads the nnUNet_* variables at import: after configure_environment().
    from nnunetv2.ensembling.ensemble import ensemble_folders

    ensemble_folders(
        [str(folder) for folder in folders],
        str(target),
        save_merged_probabilities=False,
        num_processes=processes,
        dataset_json_file_or_dict=dataset_json,
        plans_json_file_or_dict=plans,
    )


def postprocessing_rules(record: Path) -> tuple[list[Callable], list[dict]]:
    """The rules nnU-Net kept, read from the ``postprocessing.json`` it writes beside
    ``postprocessing.pkl``: functions by name among nnU-Net's own, so nothing is unpickled."""
    # nnunetv2 reads the nnUNet_* variables at import: after configure_environment().
    from nnunetv2.postprocessing.remove_connected_components import (
        remove_all_but_largest_component_from_segmentation as keep_largest,
    )

    fix = "determine it again: samnet_compare DATASET (or nnUNetv2_determine_postprocessing)"
    try:
        summary = json.loads(record.read_text())
        names = summary["postprocessing_fns"]
        arguments = summary["postprocessing_kwargs"]
    except (OSError, ValueError, KeyError) as error:
        raise SamnetError(record, f"cannot be read ({error})", fix) from error
    unknown = sorted(set(names) - {keep_largest.__name__})
    if unknown or len(arguments) != len(names):
        raise SamnetError(
            record,
            f"names functions samnet does not apply ({unknown}) or does not give each "
            "its arguments",
            fix,
        )
    return [keep_largest] * len(names), arguments


def postprocess(
    folder: Path,
    target: Path,
    postprocessing: Path,
    dataset_json: dict,
    plans: dict,
    processes: int,
) -> None:
    """nnU-Net's ``apply_postprocessing_to_folder`` with the rules of ``postprocessing``
    (``postprocessing_rules``)."""
    from nnunetv2.postprocessing.remove_connected_components import (
        apply_postprocessing_to_folder,
    )

    functions, arguments = postprocessing_rules(postprocessing)
    apply_postprocessing_to_folder(
        str(folder), str(target), functions, arguments, plans, dataset_json, processes
    )


def prediction_record(
    selection: Selection,
    options: Options,
    written: list[Path],
    converted: int,
    seconds: float,
) -> dict:
    """What ``predict_cases`` made, from what, and how fast (``samnet_prediction.json``)."""
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
        "converted_cases": converted,
        "seconds": round(seconds, 2),
        "seconds_per_case": round(seconds / len(written), 2),
        "outputs": [p.name for p in written],
    }


def predict_cases(
    cases: dict[str, list[Path]],
    output: Path,
    selection: Selection,
    options: Options,
    run_member: MemberRunner = run_with_nnunet,
) -> dict:
    """Segment ``cases`` (id -> channel files) into the folder ``output``; return a record.

    Each case becomes ``output/CASE.ext`` in its input's format and geometry. Work files go
    to a hidden temporary sibling of ``output``, removed at the end (and by the next run,
    when a kill left it).
    """
    dataset_json = training_dataset_json(selection)
    plans = json.loads((selection.members[0].folder / "plans.json").read_text())
    ending = dataset_json["file_ending"]
    start = time.perf_counter()
    with scratch_folder(output.parent, ".samnet_predict.") as work:
        (work / "inputs").mkdir()
        inputs, converted = stage_inputs(
            cases, ending, channel_names(dataset_json), work / "inputs"
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
    return prediction_record(selection, options, written, len(converted), seconds)
