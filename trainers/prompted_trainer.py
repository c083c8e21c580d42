"""nnUNetTrainerSAMPrompted: SAM fine-tuned to follow an annotator's boxes or clicks.

For plans with ``prompts`` (``samnet_plan --prompts box|point|box,point``; Gu et al.
2024's prompt-based setting). What it changes in ``nnUNetTrainerSAMCached``:

- every training and validation batch is prompted: for each window, one prompt per class
  present in its reference, of a kind the plan allows, simulated as an annotator gives it
  (``samnet.prompting.simulated.simulate_prompts``). The prompts travel with the cached
  features in the batch's ``EncodedImages``, and the network turns them into class logits
  (``SamSegmentationNetwork.decode_class_prompts``: a prompted class's mask logit against
  background's 0), so nnU-Net's Dice + CE loss and pseudo Dice apply unchanged;
- the final validation prompts each validation case slice by slice from its reference
  (seeded, so every run sees the same prompts) and exports and scores the result with
  nnU-Net's ``export_prediction_from_logits`` and ``compute_metrics_on_folder``, like
  every other method's. Reports mark these scores: the prompts came from the reference.

One process only for now: which prompt encoder parameters a step uses depends on its
prompts (boxes or clicks), and the trainers' DDP runs with a static graph.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from tqdm import tqdm

from samnet.core.errors import SamnetError
from samnet.prompting.prompted_sam import prompted_volume_logits
from samnet.prompting.simulated import simulate_prompts
from samnet.trainers.cached_trainer import nnUNetTrainerSAMCached
from samnet.trainers.distributed import data_seed

# The final validation's prompts: the same for every run and fold of a case.
VALIDATION_PROMPT_SEED = 0


class nnUNetTrainerSAMPrompted(nnUNetTrainerSAMCached):
    """SAM's mask decoder trained on prompts simulated from the reference."""

    def initialize(self) -> None:
        if self.sam_plan.prompts is None:
            raise SamnetError(
                None,
                "this plan trains prompt-free SAM (its sam block has no prompts)",
                "re-plan with samnet_plan --prompts box|point|box,point, or use "
                "nnUNetTrainerSAMCached",
            )
        if self.is_ddp:
            raise SamnetError(
                None,
                "prompted training runs in one process for now",
                "run it without torchrun (--launcher local)",
            )
        super().initialize()

    def on_train_start(self) -> None:
        self.prompt_generator = np.random.default_rng(
            data_seed(self.fold, self.local_rank, self.current_epoch) + 3
        )
        super().on_train_start()

    @property
    def classes(self) -> list[int]:
        return list(self.label_manager.foreground_labels)

    def prompted(self, batch: dict) -> dict:
        """``batch`` whose ``EncodedImages`` carry prompts simulated from its ``target``
        (``B x 1 x H x W``): the network follows them instead of its prompt-free head."""
        references = np.asarray(batch["target"][:, 0])
        prompts = [
            simulate_prompts(
                reference, self.classes, self.sam_plan.prompts, self.prompt_generator
            )
            for reference in references
        ]
        return {**batch, "data": dataclasses.replace(batch["data"], prompts=prompts)}

    def train_step(self, batch: dict) -> dict:
        return super().train_step(self.prompted(batch))

    def validation_step(self, batch: dict) -> dict:
        return super().validation_step(self.prompted(batch))

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Every validation case prompted from its reference, exported and scored as nnU-Net
        scores every method (``validation/summary.json``)."""
        network = self.sam_network.eval()
        folder = Path(self.output_folder) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        _, keys = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, keys)
        for index, key in enumerate(
            tqdm(keys, desc="prompted validation", unit="case")
        ):
            data, seg, _, properties = dataset.load_case(key)
            logits = prompted_volume_logits(
                network,
                np.asarray(data),
                np.asarray(seg[0]),
                self.classes,
                self.sam_plan.prompts,
                np.random.default_rng([VALIDATION_PROMPT_SEED, index]),
            )
            export_prediction_from_logits(
                logits,
                properties,
                self.configuration_manager,
                self.plans_manager,
                self.dataset_json,
                str(folder / key),
                save_probabilities,
            )
        metrics = compute_metrics_on_folder(
            str(Path(self.preprocessed_dataset_folder_base) / "gt_segmentations"),
            str(folder),
            str(folder / "summary.json"),
            self.plans_manager.image_reader_writer_class(),
            self.dataset_json["file_ending"],
            self.label_manager.foreground_labels,
            self.label_manager.ignore_label,
            chill=True,
        )
        self.print_to_log_file(
            "Prompted validation Dice (prompts from the reference): "
            f"{metrics['foreground_mean']['Dice']:.4f}",
            also_print_to_console=True,
        )
