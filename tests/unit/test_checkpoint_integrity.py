"""Checkpoints and finished folds that survive a kill: checkpoints written whole or not at
all, read without running code, a torn one a clear error (or a resume from the one
before), and a fold done only once its validation completed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPORT_DATASET, write_dataset_json, write_model_files, write_summary
from nnunetv2.training.logging.nnunet_logger import LocalLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from samnet.core.errors import SamnetError
from samnet.core.layout import FOLD_STATS_FILE
from samnet.core.methods import Budget, Method
from samnet.evaluation.report import build_report, write_report
from samnet.pipeline.train_fold import fold_folder, resume_checkpoint, train_fold
from samnet.trainers.checkpoints import AtomicCheckpointMixin, read_checkpoint
from samnet.trainers.support_slices_trainer import nnUNetTrainerSupportSlices
from samnet.trainers.variants import training_variant

BASELINE = "nnUNetTrainer__nnUNetPlans__2d"
OTHER = "nnUNetTrainer__nnUNetPlans__3d_fullres"


class TinyTrainer(nnUNetTrainer):
    """What nnU-Net's own ``save_checkpoint`` reads of a trainer, on a two-weight network."""

    def __init__(self, epoch: int) -> None:  # nnU-Net's __init__ needs a dataset
        self.local_rank, self.disable_checkpointing, self.is_ddp = 0, False, False
        self.network = torch.nn.Linear(2, 1)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=0.1)
        self.grad_scaler = None
        self.logger = LocalLogger()
        self.logger.log("train_losses", np.float32(0.5), 0)
        self._best_ema = np.float32(0.25)
        self.current_epoch = epoch
        self.my_init_kwargs = {"device": torch.device("cpu"), "fold": 0}
        self.inference_allowed_mirroring_axes = (0, 1)


class KilledMidWrite:
    """Stops ``torch.save`` part-way, as a kill does."""

    def __reduce__(self) -> tuple:
        raise KeyboardInterrupt("killed while the checkpoint was being written")


def save(trainer: nnUNetTrainer, path: Path) -> None:
    trainer.save_checkpoint(str(path))


def test_a_write_stopped_midway_leaves_the_previous_checkpoint_whole(
    tmp_path: Path,
) -> None:
    trainer = training_variant(TinyTrainer, distributed=False)(epoch=3)
    latest = tmp_path / "checkpoint_latest.pth"
    save(trainer, latest)
    trainer.current_epoch, trainer._best_ema = 4, KilledMidWrite()
    with pytest.raises(KeyboardInterrupt):
        save(trainer, latest)
    # nnU-Net's plain torch.save truncates the file first: epoch 3 would be lost.
    checkpoint = read_checkpoint(latest)
    assert checkpoint["current_epoch"] == 4  # epoch 3's, which resumes at 4
    assert checkpoint["_best_ema"] == np.float32(0.25)
    assert [p.name for p in tmp_path.iterdir()] == [latest.name]


def test_samnets_own_trainers_write_whole_checkpoints_under_nnunet_too() -> None:
    assert issubclass(nnUNetTrainerSupportSlices, AtomicCheckpointMixin)
    variant = training_variant(nnUNetTrainerSupportSlices, distributed=True)
    assert variant.__mro__.count(AtomicCheckpointMixin) == 1


def test_a_torn_or_unsafe_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pth"
    save(training_variant(TinyTrainer, distributed=False)(epoch=0), whole)
    data = whole.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 10):
        torn = tmp_path / f"torn_{size}.pth"
        torn.write_bytes(data[:size])
        with pytest.raises(SamnetError, match="torn by a kill mid-write") as error:
            read_checkpoint(torn)
        assert error.value.path == torn
    # Unpickling runs what the file names: samnet never does.
    ran = tmp_path / "code_ran"
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"logging": {}, "payload": CodeOnLoad(ran)}, unsafe)
    with pytest.raises(SamnetError, match="objects other than tensors"):
        read_checkpoint(unsafe)
    assert not ran.exists()


class CodeOnLoad:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def write_checkpoint(path: Path, epoch: int) -> None:
    save(training_variant(TinyTrainer, distributed=False)(epoch=epoch), path)


def test_resume_falls_back_from_a_torn_final_checkpoint_to_the_latest(
    tmp_path: Path, capsys
) -> None:
    final, latest = (
        tmp_path / "checkpoint_final.pth",
        tmp_path / "checkpoint_latest.pth",
    )
    assert resume_checkpoint(tmp_path) is None
    write_checkpoint(latest, epoch=2)
    assert resume_checkpoint(tmp_path) == latest
    write_checkpoint(final, epoch=3)
    assert resume_checkpoint(tmp_path) == final
    final.write_bytes(final.read_bytes()[:100])  # written in place by an older samnet
    assert resume_checkpoint(tmp_path) == latest
    assert f"resuming from {latest} instead" in capsys.readouterr().out
    latest.unlink()
    with pytest.raises(SamnetError, match="cannot be read") as error:
        resume_checkpoint(tmp_path)
    assert error.value.path == final


METHOD = Method("nnUNetTrainer", "nnUNetPlans", "2d")
BUDGET = Budget(1, 1, 1, 2)


def test_a_fold_is_done_only_once_validation_completed(nnunet_folders) -> None:
    """A summary.json alone (torn, or from a validation that did not finish) does not
    end the fold: train_fold goes on to train or validate it (here it stops at the
    missing plans); the stats file written after validation does."""
    folder = fold_folder("Dataset001_Tiny", METHOD, 0)
    (folder / "validation").mkdir(parents=True)
    summary = folder / "validation" / "summary.json"
    summary.write_text('{"metric_per_case": [')
    with pytest.raises(SamnetError, match="plans file not found"):
        train_fold("Dataset001_Tiny", METHOD, 0, BUDGET, torch.device("cpu"))
    (folder / FOLD_STATS_FILE).write_text("{}")
    done = train_fold("Dataset001_Tiny", METHOD, 0, BUDGET, torch.device("cpu"))
    assert done == summary


def write_fold(results: Path, method: str, fold: int, done: bool) -> None:
    validation = results / REPORT_DATASET / method / f"fold_{fold}" / "validation"
    write_summary(validation, {f"c{fold}": {"1": 0.5, "2": 0.75}}, done=done)
    write_model_files(validation.parents[1])


def test_compare_reports_only_folds_marked_done_and_says_which_it_left_out(
    nnunet_folders, capsys
) -> None:
    write_dataset_json(nnunet_folders["nnUNet_raw"])
    results = nnunet_folders["nnUNet_results"]
    write_fold(results, BASELINE, 0, done=True)
    write_fold(results, BASELINE, 1, done=False)
    # Torn by a kill during validation: must not crash the report.
    (results / REPORT_DATASET / BASELINE / "fold_1/validation/summary.json").write_text(
        '{"metric_per_case": [{"ref'
    )
    write_fold(results, OTHER, 0, done=False)
    report = json.loads((write_report(REPORT_DATASET) / "report.json").read_text())
    assert list(report["methods"]) == [BASELINE]
    assert list(report["methods"][BASELINE]["folds"]) == ["0"]
    assert set(report["folds_left_out"]) == {BASELINE, OTHER}
    assert "without samnet_fold_stats.json" in report["folds_left_out"][OTHER]["0"]
    err = capsys.readouterr().err
    assert f"{BASELINE} fold 1 left out" in err and f"{OTHER} fold 0 left out" in err
    markdown = (results / REPORT_DATASET / "samnet_report" / "report.md").read_text()
    assert "Folds left out" in markdown


def test_compare_without_any_fold_marked_done_is_a_clear_error(nnunet_folders) -> None:
    write_dataset_json(nnunet_folders["nnUNet_raw"])
    write_fold(nnunet_folders["nnUNet_results"], BASELINE, 0, done=False)
    with pytest.raises(SamnetError, match="no validated fold found.*without"):
        build_report(REPORT_DATASET)


def test_a_validated_fold_with_a_damaged_summary_is_a_clear_error(
    nnunet_folders,
) -> None:
    write_dataset_json(nnunet_folders["nnUNet_raw"])
    results = nnunet_folders["nnUNet_results"]
    write_fold(results, BASELINE, 0, done=True)
    summary = results / REPORT_DATASET / BASELINE / "fold_0/validation/summary.json"
    summary.write_text("{")
    with pytest.raises(SamnetError, match="is not valid JSON") as error:
        build_report(REPORT_DATASET)
    assert error.value.path == summary
