"""Interactive prediction: a prompted SAM model turns an annotator's boxes and clicks into masks.

A model trained with ``--prompts`` (``nnUNetTrainerSAMPrompted``) segments what it is shown:
each case is preprocessed as nnU-Net preprocesses it, the prompts (``samnet.prompting.prompts_file``,
in the input array's pixels) are carried into the preprocessed slices (axis order,
cropping, resampling), every prompted slice is encoded once and decoded by every fold
(their class logits averaged), unprompted slices are background, and nnU-Net's
``export_prediction_from_logits`` writes the result in the input's geometry. A 3D box is
the same box on each of its slices, so the result is one consistent 3D mask.

``segment_with_prompts`` is the Python API; ``samnet_predict --prompts FILE`` the command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from samnet.core.errors import SamnetError
from samnet.core.layout import FINAL_CHECKPOINT
from samnet.core.methods import PROMPTED_TRAINER, Method
from samnet.inference.run import Options
from samnet.inference.selection import Member, Selection
from samnet.models.object_prompt import ObjectPrompt
from samnet.models.shared_encoder import FoldMeanNetwork, fold_mean_network
from samnet.prompting.prompted_sam import volume_class_logits
from samnet.prompting.prompts_file import SlicePrompt, load_prompts


@dataclass
class PromptedModel:
    """A prompted SAM model's folds on one encoder, and nnU-Net's view of its data."""

    network: FoldMeanNetwork
    plans_manager: object
    configuration_manager: object
    dataset_json: dict

    @property
    def num_classes(self) -> int:
        return self.network.folds[0].class_head.num_classes


def load_prompted_model(
    member: Member, device: str = "cpu", checkpoint: str = FINAL_CHECKPOINT
) -> PromptedModel:
    """The folds of a ``nnUNetTrainerSAMPrompted`` results folder, built by nnU-Net's
    predictor and sharing their frozen encoder."""
    # nnunetv2 reads the nnUNet_* variables at import: after configure_environment().
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device(device), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(
        str(member.folder), member.folds, checkpoint
    )
    network = fold_mean_network(predictor.network, predictor.list_of_parameters)
    return PromptedModel(
        network.to(device).eval(),
        predictor.plans_manager,
        predictor.configuration_manager,
        predictor.dataset_json,
    )


def to_preprocessed(
    prompt: SlicePrompt,
    transpose_forward: list[int],
    properties: dict,
    shape: tuple[int, int, int],
) -> SlicePrompt | None:
    """A prompt in the input array's pixels -> the same prompt in the preprocessed volume
    ``shape`` (Z x H x W), or None where its slice was cropped away.

    nnU-Net transposes the axes (``transpose_forward``), crops to the non-zero box
    (``bbox_used_for_cropping``) and resamples; SAM slices along the first axis after
    that, which must be the input's first axis for slice prompts to stay slices.
    """
    if transpose_forward[0] != 0:
        raise SamnetError(
            None,
            f"this model slices along the input's axis {transpose_forward[0]}, prompts "
            "are given on slices of axis 0",
            "give the prompts on slices of the axis the model slices (its plans' "
            "transpose_forward[0])",
        )
    bbox = properties["bbox_used_for_cropping"]
    cropped = properties["shape_after_cropping_and_before_resampling"]
    scale = [new / old for new, old in zip(shape, cropped)]
    z = prompt.slice - bbox[0][0]
    if not 0 <= z < cropped[0]:
        return None

    def moved(x: float, y: float, half: float) -> tuple[float, float]:
        """Input (x, y) -> preprocessed (x, y); ``half`` 0.5 for pixel centres, 0 for edges."""
        raw = {1: y, 2: x}
        new = {
            axis: (raw[transpose_forward[axis]] - bbox[axis][0] + half) * scale[axis]
            - half
            for axis in (1, 2)
        }
        return new[2], new[1]

    box = points = None
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        box = (*moved(x0, y0, 0.0), *moved(x1, y1, 0.0))
    if prompt.points is not None:
        points = tuple(moved(x, y, 0.5) for x, y in prompt.points)
    return replace(prompt, slice=int(z * scale[0]), box=box, points=points)


def prompted_logits(
    model: PromptedModel, data: np.ndarray, prompts: list[SlicePrompt]
) -> torch.Tensor:
    """Class logits ``K x Z x H x W`` of preprocessed ``data`` (``C x Z x H x W``): the
    folds' mean on prompted slices, background elsewhere."""
    per_slice = [
        [object_prompt(p) for p in prompts if p.slice == z]
        for z in range(data.shape[1])
    ]
    return volume_class_logits(model.network, data, per_slice, model.num_classes)


def object_prompt(prompt: SlicePrompt) -> ObjectPrompt:
    return ObjectPrompt(
        prompt.label,
        box=None if prompt.box is None else list(prompt.box),
        points=None if prompt.points is None else [list(p) for p in prompt.points],
        point_labels=None if prompt.point_labels is None else list(prompt.point_labels),
    )


def segment_with_prompts(
    model: PromptedModel,
    image_files: list[Path],
    prompts: list[SlicePrompt],
    output_truncated: Path,
) -> Path:
    """Segment one case (its channel files) from ``prompts``; writes
    ``output_truncated + file ending`` in the input's geometry and returns it."""
    # nnunetv2 reads the nnUNet_* variables at import: after configure_environment().
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    preprocessor = model.configuration_manager.preprocessor_class(verbose=False)
    data, _, properties = preprocessor.run_case(
        [str(f) for f in image_files],
        None,
        model.plans_manager,
        model.configuration_manager,
        model.dataset_json,
    )
    moved = [
        to_preprocessed(
            p, model.plans_manager.transpose_forward, properties, data.shape[1:]
        )
        for p in prompts
    ]
    logits = prompted_logits(model, data, [p for p in moved if p is not None])
    export_prediction_from_logits(
        logits,
        properties,
        model.configuration_manager,
        model.plans_manager,
        model.dataset_json,
        str(output_truncated),
        False,
    )
    return Path(f"{output_truncated}{model.dataset_json['file_ending']}")


def is_prompted(member: Member) -> bool:
    return Method.from_folder_name(member.folder.name).trainer == PROMPTED_TRAINER


def predict_with_prompts(
    cases: dict[str, list[Path]],
    output: Path,
    selection: Selection,
    options: Options,
    prompts_file: Path,
) -> dict:
    """``samnet_predict --prompts``: each case segmented from its prompts into ``output``
    (cases without prompts are all background); returns a record."""
    if len(selection.members) != 1 or not is_prompted(selection.members[0]):
        raise SamnetError(
            prompts_file,
            f"prompts need one model trained with prompts ({PROMPTED_TRAINER}), not "
            f"{selection.name}",
            f"pass --model {PROMPTED_TRAINER}:samnetPlans:sam_2d (trained with "
            "samnet_plan_and_train --prompts box|point)",
        )
    start = time.perf_counter()
    model = load_prompted_model(
        selection.members[0], options.device, options.checkpoint
    )
    ending = model.dataset_json["file_ending"]
    reader = model.plans_manager.image_reader_writer_class()
    # Every image is read up front for its shape, so that a bad prompt anywhere in the
    # file stops the run before any output is written (each is read again to segment).
    shapes = {}
    for case, files in cases.items():
        if not all(f.name.endswith(ending) for f in files):
            raise SamnetError(
                files[0],
                f"prompts are given in the pixels of the model's own format ({ending})",
                f"convert the images to {ending} first, or predict without --prompts",
            )
        image, _ = reader.read_images([str(f) for f in files])
        shapes[case] = tuple(image.shape[1:])
    labels = {v for v in model.dataset_json["labels"].values() if v != 0}
    prompts = load_prompts(prompts_file, shapes, labels)
    written = [
        segment_with_prompts(model, cases[case], prompts.get(case, []), output / case)
        for case in tqdm(cases, desc="prompted cases", unit="case")
    ]
    seconds = time.perf_counter() - start
    return {
        "configuration": selection.name,
        "prompts": str(prompts_file),
        "prompted_cases": sorted(prompts),
        "device": options.device,
        "cases": len(written),
        "seconds": round(seconds, 2),
        "seconds_per_case": round(seconds / len(written), 2),
        "outputs": [p.name for p in written],
    }
