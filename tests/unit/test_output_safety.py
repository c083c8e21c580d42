"""Nothing lost, nothing left behind: output folders, SIGTERM, leftovers of killed runs, modes.

``--overwrite`` replaces only what samnet wrote in a user's output folder; an output folder
that is, is inside or holds the inputs is refused; pre-trained weights that trained folds
are built on are kept; SIGTERM cleans up as an error does and the next run removes what a
SIGKILL left; what samnet writes gets the modes the umask gives.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import BASELINE, PREDICT_DATASET, FakeModel, write_model

import samnet.cli.predict as predict_command
from samnet.core.atomic import atomic_file, atomic_folder
from samnet.core.errors import SamnetError
from samnet.core.layout import MANIFEST
from samnet.core.output_folder import own_outputs
from samnet.core.termination import EXIT_STATUS
from samnet.inference.run import Options, predict_cases
from samnet.inference.selection import select_models
from samnet.msd.export import export_task
from samnet.msd.validate import reference_from_task_folder
from samnet.pipeline.fewshot import predict_few_shot

MODEL = ["-d", "321", "--model", "nnUNetTrainer:nnUNetPlans:3d_fullres"]
TASK = "Task77_Fixture"


def image(path: Path, value: float = 100.0) -> None:
    array = np.zeros((4, 5, 6), dtype=np.float32)
    array[1:3, 1:4, 2:5] = value
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its content."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_killed(code: str) -> None:
    """Run ``code`` (with os, signal, Path and samnet's atomic writers imported) in a
    process that kills itself with SIGKILL where the code says ``KILL``."""
    header = (
        "import os, signal, pathlib\nfrom pathlib import Path\n"
        "from samnet.core.atomic import atomic_folder, scratch_folder\n"
    )
    kill = "os.kill(os.getpid(), signal.SIGKILL)"
    run = subprocess.run(
        [sys.executable, "-c", header + code.replace("KILL", kill)], check=False
    )
    assert run.returncode == -signal.SIGKILL


def killed_writes(parent: Path) -> list[Path]:
    """What SIGKILL left of an atomic_folder of ``parent/out`` and a prediction's scratch."""
    run_killed(
        f"with atomic_folder(Path({str(parent / 'out')!r})) as folder:\n"
        f"    (folder / 'half').write_text('x')\n"
        f"    with scratch_folder(Path({str(parent)!r}), '.samnet_predict.'):\n"
        "        KILL"
    )
    return sorted(parent.iterdir())


@pytest.fixture
def data(nnunet_folders: dict[str, Path], tmp_path: Path) -> Path:
    """A user's data folder: inputs, labels and notes, and a trained (fake) model."""
    write_model(nnunet_folders["nnUNet_results"] / PREDICT_DATASET, BASELINE)
    folder = tmp_path / "data"
    (folder / "imagesTs").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    image(folder / "imagesTs" / "case_0000.nii.gz")
    image(folder / "labelsTr" / "case.nii.gz", 1)
    (folder / "notes.txt").write_text("mine")
    return folder


@pytest.fixture
def fake_predictor(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    """samnet_predict with nnU-Net's predictor replaced by a fake model (nothing else)."""
    runner = FakeModel()
    monkeypatch.setattr(
        predict_command,
        "predict_cases",
        functools.partial(predict_cases, run_member=runner),
    )
    return runner


@pytest.mark.parametrize("output", ["imagesTs", "imagesTs/out", "."])
def test_predict_refuses_an_output_folder_that_is_in_or_above_the_inputs(
    data: Path, output: str, capsys: pytest.CaptureFixture
) -> None:
    before = tree(data)
    arguments = ["-i", str(data / "imagesTs"), "-o", str(data / output)]
    assert predict_command.main([*MODEL, *arguments, "--overwrite"]) == 1
    assert "the input folder" in capsys.readouterr().err
    assert tree(data) == before and not (data / "imagesTs" / "out").exists()


def test_predict_overwrite_replaces_only_what_samnet_wrote(
    data: Path, fake_predictor: FakeModel, capsys: pytest.CaptureFixture
) -> None:
    """``-o data`` with ``--overwrite`` once deleted the user's whole data folder."""
    inputs, output = data / "imagesTs", data.parent / "segmentations"
    output.mkdir()
    (output / "report.docx").write_text("a colleague's")
    arguments = [*MODEL, "-i", str(inputs), "-o", str(output), "--overwrite"]
    assert predict_command.main(arguments) == 0
    assert sorted(p.name for p in output.iterdir()) == sorted(
        ["case.nii.gz", "samnet_prediction.json", MANIFEST, "report.docx"]
    )
    # a second run on other cases: the first run's segmentation goes, the user's file stays
    (inputs / "case_0000.nii.gz").rename(inputs / "other_0000.nii.gz")
    assert predict_command.main(arguments) == 0
    assert sorted(p.name for p in output.iterdir()) == sorted(
        ["other.nii.gz", "samnet_prediction.json", MANIFEST, "report.docx"]
    )
    assert (output / "report.docx").read_text() == "a colleague's"
    assert json.loads((output / MANIFEST).read_text())["files"] == [
        "other.nii.gz",
        "samnet_prediction.json",
    ]
    # an output that would land on a file samnet did not write: refused, nothing changed
    (output / "third.nii.gz").write_text("the user's own segmentation")
    image(inputs / "third_0000.nii.gz")
    before = tree(output)
    capsys.readouterr()
    assert predict_command.main(arguments) == 1
    assert "third.nii.gz: exists and samnet did not write it" in capsys.readouterr().err
    assert tree(output) == before
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(".")] == []


def test_few_shot_prediction_refuses_the_input_folder_as_output(data: Path) -> None:
    inputs = data / "imagesTs"
    for output in (inputs, data):
        with pytest.raises(SamnetError, match="the input folder"):
            predict_few_shot(PREDICT_DATASET, inputs, output, overwrite=True)
    assert (data / "notes.txt").read_text() == "mine"


def msd_task(folder: Path) -> Path:
    """An extracted MSD task: two test images and dataset.json."""
    (folder / "imagesTs").mkdir(parents=True)
    for index in (1, 2):
        data = np.zeros((6, 7, 5), dtype=np.float32)
        data[1:4, 2:5, 1:3] = 100.0
        nibabel.save(
            nibabel.Nifti1Image(data, np.diag([0.9, 1.1, 2.0, 1.0])),
            folder / "imagesTs" / f"fixture_00{index}.nii.gz",
        )
    labels = {"0": "background", "1": "anterior", "2": "posterior"}
    (folder / "dataset.json").write_text(json.dumps({"labels": labels}))
    return folder


def test_msd_export_overwrite_keeps_other_files_and_refuses_the_task_itself(
    data: Path, tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    task = msd_task(tmp_path / "msd" / TASK)
    reference = reference_from_task_folder(task)
    selection = select_models(
        nnunet_folders["nnUNet_results"] / PREDICT_DATASET,
        ["nnUNetTrainer:nnUNetPlans:3d_fullres"],
    )
    options = Options(device="cpu", processes=1)
    # -o above the images: its task folder is the MSD task folder itself
    before = tree(task)
    with pytest.raises(SamnetError, match="holds the input folder"):
        export_task(reference, task.parent, selection, options, True, FakeModel())
    assert tree(task) == before
    output = tmp_path / "submission"
    (output / TASK).mkdir(parents=True)
    (output / TASK / "README.txt").write_text("how we made it")
    export_task(reference, output, selection, options, True, FakeModel())
    export_task(reference, output, selection, options, True, FakeModel())
    assert sorted(p.name for p in (output / TASK).iterdir()) == sorted(
        [*reference.images, "README.txt"]
    )
    with zipfile.ZipFile(output / f"{TASK}.zip") as archive:
        assert sorted(archive.namelist()) == [f"{TASK}/{n}" for n in reference.images]


def test_own_outputs_refuses_a_manifest_naming_files_outside(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / MANIFEST).write_text(json.dumps({"files": ["../precious.txt"]}))
    (tmp_path / "precious.txt").write_text("keep")
    refused = pytest.raises(SamnetError, match="names that are not files in it")
    with refused, own_outputs(target, overwrite=True) as staging:
        (staging / "a.txt").write_text("new")
    assert (tmp_path / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "precious.txt"]


def test_pretrain_overwrite_keeps_weights_that_trained_folds_are_built_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    # imports nnunetv2, which reads nnUNet_* at import: only once the test has set them
    from samnet.pipeline.pretrain import claim_folder

    dataset = tmp_path / "results" / "Dataset001_Demo"
    pretrained = dataset / "samnet_pretrain"
    pretrained.mkdir(parents=True)
    weights = pretrained / "lite_medsam_pretrained.pth"
    weights.write_bytes(b"weights")
    (pretrained / "pretrain.json").write_text("{}")

    def trained(folder: str, checkpoint: str) -> Path:
        fold = dataset / folder / "fold_0"
        fold.mkdir(parents=True)
        (fold / "checkpoint_final.pth").write_bytes(b"")
        sam_2d = {"sam": {"checkpoint": checkpoint}}
        plans = {"configurations": {"sam_2d": sam_2d, "2d": {}}}
        (fold.parent / "plans.json").write_text(json.dumps(plans))
        return fold

    trained("nnUNetTrainerSAM__samnetPlans__sam_2d", "/elsewhere/lite_medsam.pth")
    built_on = trained("nnUNetTrainerSAMCached__samnetPlans__sam_2d", str(weights))
    with pytest.raises(SamnetError) as refused:
        claim_folder("Dataset001_Demo", {"steps": 1}, overwrite=True)
    assert "nnUNetTrainerSAMCached__samnetPlans__sam_2d/fold_0" in str(refused.value)
    assert "nnUNetTrainerSAM__samnetPlans" not in str(refused.value)
    assert weights.read_bytes() == b"weights"
    (built_on / "checkpoint_final.pth").unlink()  # the user removed the fold's model
    assert claim_folder("Dataset001_Demo", {"steps": 1}, True) == pretrained
    assert not weights.exists()


KILLED_PREDICTION = """
import functools, os, signal, sys
from helpers import FakeModel
import samnet.cli.predict as command
from samnet.inference.run import predict_cases

class KilledMidway(FakeModel):
    def __call__(self, *arguments):
        super().__call__(*arguments)
        os.kill(os.getpid(), signal.SIGTERM)

command.predict_cases = functools.partial(predict_cases, run_member=KilledMidway())
sys.exit(command.main(sys.argv[1:]))
"""


def test_sigterm_mid_prediction_leaves_no_leftovers_and_the_next_run_clears_old_ones(
    data: Path, tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    results = tmp_path / "results_parent"
    killed = killed_writes(results)
    assert [p.name.split(".")[1] for p in killed] == ["out", "samnet_predict"]
    untagged = results / ".out.x1y2.partial"  # not named by a process samnet knows
    untagged.mkdir()
    # another run, still going, writing the same output folder
    writing = (
        "import time\nfrom pathlib import Path\n"
        "from samnet.core.atomic import scratch_folder\n"
        f"with scratch_folder(Path({str(results)!r}), '.out.'):\n"
        "    print(flush=True)\n    time.sleep(300)"
    )
    alive = subprocess.Popen([sys.executable, "-c", writing], stdout=subprocess.PIPE)
    try:
        alive.stdout.readline()
        running = set(results.iterdir()) - set(killed) - {untagged}
        environment = {
            **os.environ,
            **{k: str(v) for k, v in nnunet_folders.items()},
            "PYTHONPATH": str(Path(__file__).parents[1]),
        }
        arguments = [*MODEL, "-i", str(data / "imagesTs"), "-o", str(results / "out")]
        run = subprocess.run(
            [sys.executable, "-c", KILLED_PREDICTION, *arguments],
            check=False,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        alive.kill()
        alive.wait()
    assert run.returncode == EXIT_STATUS, run.stderr[-3000:]
    assert "stopped by SIGTERM" in run.stderr
    assert len(running) == 1 and not any(p.exists() for p in killed)
    assert set(results.iterdir()) == {untagged, *running}


def test_a_folder_replacement_killed_between_its_renames_is_undone(
    tmp_path: Path,
) -> None:
    target = tmp_path / "report"
    (target / "old").mkdir(parents=True)
    # killed after the old content was moved aside, before the new one took its place
    run_killed(
        "rename = pathlib.Path.rename\n"
        "def rename_then_die(self, target):\n"
        "    rename(self, target)\n"
        "    KILL\n"
        "pathlib.Path.rename = rename_then_die\n"
        f"with atomic_folder(Path({str(target)!r}), overwrite=True) as folder:\n"
        "    (folder / 'new').mkdir()"
    )
    assert not target.exists()
    with pytest.raises(SamnetError, match="already exists"), atomic_folder(target):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert [p.name for p in target.iterdir()] == ["old"]


@pytest.mark.parametrize("umask", [0o022, 0o007, 0o077])
def test_atomic_writes_get_the_modes_the_umask_gives(
    tmp_path: Path, umask: int
) -> None:
    previous = os.umask(umask)
    try:
        with atomic_folder(tmp_path / "folder") as folder:
            (folder / "inside.txt").write_text("x")
        with atomic_file(tmp_path / "file.bin") as handle:
            handle.write(b"x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE
    assert mode((tmp_path / "folder").stat().st_mode) == 0o777 & ~umask
    assert mode((tmp_path / "file.bin").stat().st_mode) == 0o666 & ~umask
