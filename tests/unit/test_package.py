"""Set-up facts a user relies on: the installed layout, folder defaults and the demo dataset."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

from samnet.core import methods, paths
from samnet.core.paths import register_trainers
from samnet.preprocessing.checks.dataset import check_dataset
from samnet.preprocessing.intake.demo_dataset import write_demo_dataset


def test_wheel_installs_folders_as_samnet_subpackages(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(tmp_path),
        str(REPO),
    ]
    subprocess.run(command, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("samnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # Every source file, each of the three folders as a samnet subpackage: a package
    # missing from setup.cfg would install without its modules.
    for folder, package in (
        ("samnet", "samnet"),
        ("planners", "samnet/planners"),
        ("trainers", "samnet/trainers"),
        ("preprocessing", "samnet/preprocessing"),
    ):
        for source in (REPO / folder).rglob("*.py"):
            assert f"{package}/{source.relative_to(REPO / folder).as_posix()}" in names
    assert not any(
        n.startswith(("planners/", "trainers/", "preprocessing/")) for n in names
    )
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command in (
        "samnet_convert_msd",
        "samnet_convert_2d",
        "samnet_check_dataset",
        "samnet_plan_and_train",
    ):
        assert f"{command} = " in text
    # Every command is the main() of its own samnet.cli module.
    targets = dict(line.split(" = ") for line in text.splitlines() if " = " in line)
    assert len(targets) == len(COMMANDS)
    for command, target in targets.items():
        assert target == f"samnet.cli.{command.removeprefix('samnet_')}:main"


COMMANDS = ("convert_msd", "convert_2d", "check_dataset", "demo_dataset", "plan")
COMMANDS += ("plan_and_train", "train_fold", "pretrain", "compare", "predict")
COMMANDS += ("export_msd", "validate_submission")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_runs_as_a_module(command: str) -> None:
    """``python -m samnet.cli.NAME`` works as the console script does: nnU-Net starts its
    workers with spawn, which imports that module again (without running ``main``)."""
    run = subprocess.run(
        [sys.executable, "-m", f"samnet.cli.{command}", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: samnet_")


def test_unset_folders_default_to_samnet_data_and_are_announced_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    for variable in paths.NNUNET_FOLDERS:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(paths, "_announced", False)
    folders = paths.configure_environment()
    paths.configure_environment()
    assert folders["nnUNet_raw"] == tmp_path / "samnet_data" / "raw"
    assert os.environ["nnUNet_results"] == str(tmp_path / "samnet_data" / "results")
    assert all(folder.is_dir() for folder in folders.values())
    assert capsys.readouterr().err.count("not set; using") == 1


def test_set_folders_are_kept(
    nnunet_folders: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    assert paths.configure_environment() == nnunet_folders
    assert "not set" not in capsys.readouterr().err


FLUSH_CHECK = """
import torch
from samnet.core.paths import configure_environment
configure_environment()
torch.set_num_threads(2)
products = torch.full((1_000_000,), 1e-20) * 1e-20  # 1e-40: an fp32 denormal
print((products == 0).float().mean().item())
"""


def test_commands_compute_denormals_as_zero_on_every_thread(
    nnunet_folders: dict[str, Path],
) -> None:
    """Flushed in the process's set-up, so the worker threads that start later inherit it."""
    run = subprocess.run(
        [sys.executable, "-c", FLUSH_CHECK], capture_output=True, text=True, check=True
    )
    assert float(run.stdout.split()[-1]) == 1.0


def test_demo_dataset_is_deterministic_and_valid(
    nnunet_folders: dict[str, Path],
) -> None:
    first = Path(write_demo_dataset(980, num_training=3, num_test=1))
    second = Path(write_demo_dataset(981, num_training=3, num_test=1))
    assert check_dataset(first) == []
    files = sorted(p.relative_to(first) for p in first.rglob("*.nii.gz"))
    assert len(files) == 7
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes()


def test_nnunet_finds_every_trainer_samnet_can_choose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``nnUNetv2_train -tr`` and samnet's own runs look trainers up by name in
    ``nnUNet_extTrainer``: a trainer missing from the lookup folder fails only there."""
    # nnunetv2 reads nnUNet_* at import: imported only once the test has set them
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    register_trainers()
    names = {
        *methods.SAM_TRAINERS.values(),
        methods.FEW_SHOT_TRAINER,
        methods.PROMPTED_TRAINER,
        *methods.SUPPORT_TRAINERS,
    }
    for name in sorted(names):
        assert recursive_find_trainer_class_by_name(name).__name__ == name
