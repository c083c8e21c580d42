"""End to end on demo-sized synthetic data: samnet_plan_and_train through nnU-Net on CPU.

Each run goes through a subprocess, as a user runs it: nnU-Net reads its folders at import.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_BUDGET, TRAINED_DEMO, TRAINED_DEMO_ID, run_module

from samnet.cli.train_fold import parse_arguments
from samnet.core.paths import trainer_lookup_folder
from samnet.models.network import build_network
from samnet.pretraining.identity import finished_pretrained_bases

DEMO_ID = TRAINED_DEMO_ID
NAME = TRAINED_DEMO
METHOD = "nnUNetTrainer__nnUNetPlans__2d"
# The demo's CPU plan: frozen encoder with cached embeddings, decoder trained.
SAM_METHOD = "nnUNetTrainerSAMCached__samnetPlans__sam_2d"

pytestmark = pytest.mark.slow


def plan_and_train(
    environment: dict[str, str], *arguments: str
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "samnet.cli.plan_and_train", *arguments]
    return subprocess.run(
        command,
        check=False,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.parametrize("method", [METHOD, SAM_METHOD])
def test_report_holds_a_dice_per_class(trained_demo, method: str) -> None:
    _, results, run = trained_demo
    report = json.loads((results / "samnet_report" / "report.json").read_text())
    fold = report["methods"][method]["folds"]["0"]
    assert set(fold["dice"]) == {"1", "2", "foreground"}
    assert all(0.0 <= d <= 1.0 for d in fold["dice"].values() if d is not None)
    assert fold["cases"] == 2
    # Every method gets the same budget: steps x batch.
    assert (
        fold["training"]["optimizer_steps"] == 4
        and fold["training"]["budget"]["batch_size"] == 4
    )
    assert (results / "samnet_report" / "report.md").exists()
    assert "report written to" in run.stdout
    assert "fold 0" in run.stderr  # the tqdm bar names the fold and counts epochs
    splits = results.parents[1] / "preprocessed" / NAME / "splits_final.json"
    assert len(json.loads(splits.read_text())) == 5


def test_sam_checkpoint_holds_only_what_trained(trained_demo) -> None:

    _, results, _ = trained_demo
    fold = results / SAM_METHOD / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=False)
    weights = checkpoint["network_weights"]
    assert checkpoint["trainer_name"] == "nnUNetTrainerSAMCached"
    assert "base_weights_sha256" in weights
    assert any(name.startswith("class_head") for name in weights)
    assert not any(name.startswith("sam.image_encoder") for name in weights)
    stats = json.loads((fold / "samnet_fold_stats.json").read_text())
    assert stats["embedding_cache_seconds"] > 0
    assert 0 < stats["trainable_parameters"] < 6_000_000  # decoder + head of 10 M


def test_nnunet_predict_finds_and_runs_the_sam_trainer(trained_demo, tmp_path) -> None:
    """nnUNetv2_predict -tr with samnet's folder in nnUNet_extTrainer (as the README says)."""
    environment, results, _ = trained_demo

    raw = results.parents[1] / "raw" / NAME
    images = tmp_path / "images"
    images.mkdir()
    (images / "demo_000_0000.nii.gz").symlink_to(
        raw / "imagesTr" / "demo_000_0000.nii.gz"
    )
    command = ["nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "out")]
    command += ["-d", str(DEMO_ID), "-c", "sam_2d", "-p", "samnetPlans", "-f", "0"]
    command += ["-tr", "nnUNetTrainerSAMCached", "-device", "cpu"]
    run = subprocess.run(
        [str(Path(sys.executable).parent / command[0]), *command[1:]],
        env=dict(environment, nnUNet_extTrainer=str(trainer_lookup_folder())),
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (tmp_path / "out" / "demo_000.nii.gz").exists()


def test_rerun_skips_what_is_done(trained_demo) -> None:
    environment, results, _ = trained_demo
    summary = results / METHOD / "fold_0" / "validation" / "summary.json"
    before = summary.stat().st_mtime_ns
    run = plan_and_train(environment, str(DEMO_ID), *TINY_BUDGET)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "fold 0 is done" in run.stdout
    assert summary.stat().st_mtime_ns == before


def test_lowres_baseline_is_refused_where_sam_keeps_native_spacing(
    trained_demo,
) -> None:
    environment, results, _ = trained_demo
    arguments = [a if a != "2d" else "2d_lowres" for a in TINY_BUDGET]
    run = plan_and_train(environment, str(DEMO_ID), *arguments)
    assert run.returncode == 1
    assert "samnetPlans.json" in run.stderr and "2d_lowres" in run.stderr
    assert not list(results.glob("*2d_lowres"))


def test_support_baselines_need_a_few_shot_plan(trained_demo) -> None:
    environment, results, _ = trained_demo
    run = plan_and_train(
        environment, str(DEMO_ID), *TINY_BUDGET, "--methods", "support"
    )
    assert run.returncode == 1
    assert "--few-shot K" in run.stderr and "samnetPlans.json" in run.stderr
    assert not list(results.glob("nnUNetTrainerSupportSlices*"))


def test_another_budget_on_a_started_fold_is_refused(trained_demo) -> None:
    environment, results, _ = trained_demo
    # Without its stats file (written after validation) the fold is not done.
    (results / METHOD / "fold_0" / "samnet_fold_stats.json").rename(
        results / "samnet_fold_stats.json.kept"
    )
    try:
        arguments = [a if a != "4" else "8" for a in TINY_BUDGET]
        run = plan_and_train(environment, str(DEMO_ID), *arguments)
    finally:
        (results / "samnet_fold_stats.json.kept").rename(
            results / METHOD / "fold_0" / "samnet_fold_stats.json"
        )
    assert run.returncode == 1
    assert "samnet_budget.json" in run.stderr and "--overwrite" in run.stderr


@pytest.mark.parametrize(("method", "fold_number"), [(SAM_METHOD, 1), (METHOD, 3)])
def test_interrupted_fold_resumes_from_its_last_epoch(
    trained_demo, method: str, fold_number: int
) -> None:
    environment, results, _ = trained_demo
    arguments = [
        str(DEMO_ID),
        "--folds",
        str(fold_number),
        "--configurations",
        "2d",
        "--epochs",
        "4",
    ]
    arguments += ["--iterations-per-epoch", "6", "--val-iterations-per-epoch", "1"]
    arguments += ["--batch-size", "4", "--device", "cpu"]
    arguments += ["--methods", "sam" if method == SAM_METHOD else "nnunet"]
    fold = results / method / f"fold_{fold_number}"
    process = subprocess.Popen(
        [sys.executable, "-m", "samnet.cli.plan_and_train", *arguments],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not (fold / "checkpoint_latest.pth").exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)  # let torch.save finish the file
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (fold / "checkpoint_final.pth").exists(), (
        "killed too late to test resuming"
    )

    run = plan_and_train(environment, *arguments)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"resuming {method} fold {fold_number} at epoch" in run.stdout
    assert (fold / "checkpoint_final.pth").exists()
    stats = json.loads((fold / "samnet_fold_stats.json").read_text())
    assert len(stats["seconds_per_epoch"]) == 4


def test_torn_checkpoint_is_a_clear_error_and_kept(trained_demo) -> None:
    environment, results, _ = trained_demo
    fold = results / METHOD / "fold_2"
    fold.mkdir(parents=True)
    torn = fold / "checkpoint_latest.pth"
    torn.write_bytes(b"PK\x03\x04 cut short")
    arguments = [a if a != "0" else "2" for a in TINY_BUDGET]
    run = plan_and_train(environment, str(DEMO_ID), *arguments, "--methods", "nnunet")
    assert run.returncode == 1
    assert "checkpoint_latest.pth: cannot be read" in run.stderr
    assert "delete it to restart this fold" in run.stderr
    assert torn.read_bytes() == b"PK\x03\x04 cut short"


# DDP on CPU sums the same gradients in another order: float32 rounding, which AdamW's
# first, normalised steps amplify (measured on the demo after 3 steps: 4.6e-4 at 64 px,
# 4e-5 at 128 px), far below what the steps move the loss (0.44).
DDP_LOSS_TOLERANCE = 2e-3
WORKER = Path(__file__).with_name("ddp_worker.py")


def test_torchrun_ddp_trains_as_one_process_and_only_rank_zero_writes(
    trained_demo, tmp_path: Path
) -> None:
    environment, results, _ = trained_demo
    alone = tmp_path / "alone.json"
    ddp = tmp_path / "ddp.json"
    worker = [str(WORKER), "{}", NAME, "4"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc-per-node=2"]
    for command, output in (
        ([sys.executable, *worker], alone),
        ([*torchrun, *worker, "--train"], ddp),
    ):
        command = [part.format(output) for part in command]
        run = subprocess.run(
            command,
            check=False,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    one, two = json.loads(alone.read_text()), json.loads(ddp.read_text())

    assert one["batch_sizes"] == [4] and two["batch_sizes"] == [2, 2]
    # one fixed batch: the loss moves only because the parameters do
    moved = max(abs(loss - one["losses"][0]) for loss in one["losses"])
    assert moved > 100 * DDP_LOSS_TOLERANCE
    for single, distributed in zip(one["losses"], two["losses"]):
        assert abs(single - distributed) <= DDP_LOSS_TOLERANCE
    fold = results / "nnUNetTrainerSAM__samnetPlans__sam_2d" / "fold_2"
    rank_zero, rank_one = two["written"]
    assert rank_one == []
    assert (fold / "checkpoint_final.pth").exists()
    assert any(path.endswith("progress.png") for path in rank_zero)
    assert any("training_log" in path for path in rank_zero)


def test_slurm_launcher_writes_an_array_and_a_comparison_after_it(trained_demo) -> None:

    environment, results, _ = trained_demo
    arguments = [str(DEMO_ID), *TINY_BUDGET, "--folds", "0", "1", "--launcher", "slurm"]
    arguments += ["--nnodes", "2", "--sbatch-option=--partition=gpu"]
    run = plan_and_train(environment, *arguments)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = results / "samnet_slurm"
    train = (folder / "train.sbatch").read_text()
    assert "#SBATCH --array=0-3" in train and "#SBATCH --nodes=2" in train
    assert "#SBATCH --partition=gpu" in train
    runs = train.split("RUNS=(\n")[1].split("\n)")[0].splitlines()
    parsed = [parse_arguments(shlex.split(shlex.split(line)[0])) for line in runs]
    assert sorted((p.trainer, p.fold) for p in parsed) == [
        ("nnUNetTrainer", 0),
        ("nnUNetTrainer", 1),
        ("nnUNetTrainerSAMCached", 0),
        ("nnUNetTrainerSAMCached", 1),
    ]
    assert {(p.epochs, p.iterations_per_epoch, p.batch_size) for p in parsed} == {
        (2, 2, 4)
    }
    assert f"-m samnet.cli.compare {NAME}" in (folder / "compare.sbatch").read_text()
    assert "--dependency=afterok:" in (folder / "submit.sh").read_text()

    again = plan_and_train(environment, *arguments)
    assert again.returncode == 1 and "samnet_slurm: already exists" in again.stderr


def test_pretrain_writes_base_weights_that_load_with_their_identity(
    trained_demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment, results, _ = trained_demo
    arguments = [str(DEMO_ID), "--steps", "3", "--batch-size", "2", "--device", "cpu"]
    folder = results / "samnet_pretrain"
    try:
        check_pretrain_run(environment, folder, arguments, monkeypatch)
    finally:
        # Later tests re-plan the shared demo: it must not find these weights.
        shutil.rmtree(folder, ignore_errors=True)


def check_pretrain_run(
    environment: dict[str, str],
    folder: Path,
    arguments: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    run = run_module(environment, "samnet.cli.pretrain", *arguments)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((folder / "pretrain.json").read_text())
    assert len(record["losses"]) == 3 and record["dataset"] == NAME
    assert (record["cases"], record["test_cases"]) == (10, 2)
    assert (folder / "pretrain_loss.png").stat().st_size > 0
    assert not (folder / "state.pth").exists()
    weights = folder / "lite_medsam_pretrained.pth"
    assert f"--checkpoint {weights}" in run.stdout
    _, base = build_network("lite_medsam", 1, 3, image_size=128, checkpoint=weights)
    assert base.sha256 == record["sha256"]

    again = run_module(environment, "samnet.cli.pretrain", *arguments)
    assert (
        again.returncode == 1 and "holds finished pre-trained weights" in again.stderr
    )
    monkeypatch.setenv("nnUNet_results", environment["nnUNet_results"])
    assert finished_pretrained_bases(NAME) == {"lite_medsam": weights}
    (folder / "pretrain.json").unlink()
    assert finished_pretrained_bases(NAME) == {}, "an unfinished run is not used"
