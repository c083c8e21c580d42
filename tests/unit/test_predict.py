"""samnet_predict: model selection from the report, nnU-Net's ensembling and postprocessing, formats.

The fast tests replace nnU-Net's predictor by fake models (a threshold, or probabilities
stored in the model folder) that read and write through nnU-Net's own reader/writers, and
keep everything else real: the report lookup, the conversion of inputs, nnU-Net's
``ensemble_folders`` and ``apply_postprocessing_to_folder``, and the conversion back. The
slow test trains a tiny nnU-Net and runs the commands end to end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import (
    BASELINE,
    PREDICT_DATASET,
    THRESHOLD,
    FakeModel,
    heavy_imports,
    write_model,
)

from samnet.cli.predict import main
from samnet.core.errors import SamnetError
from samnet.core.layout import FINAL_CHECKPOINT, POSTPROCESSING_SUMMARY
from samnet.inference.file_formats import cases_in_folder
from samnet.inference.run import Options, predict_cases
from samnet.inference.selection import select_models

SAM = "nnUNetTrainerSAM__samnetPlans__sam_2d"
SPACING = (0.7, 0.8, 1.3)
ORIGIN = (10.5, -5.25, 3.0)
ANGLE = math.radians(30)
DIRECTION = (
    math.cos(ANGLE), -math.sin(ANGLE), 0.0,
    math.sin(ANGLE), math.cos(ANGLE), 0.0,
    0.0, 0.0, 1.0,
)  # fmt: skip


def write_report(dataset: Path, best: str, candidates: dict[str, list[str]]) -> None:
    """The part of samnet_compare's report.json that names the best configuration."""
    selection = {
        "folds": [0],
        "candidates": [
            {"name": n, "members": m, "cross_validation_dice": 0.5, "cases": 2}
            for n, m in candidates.items()
        ],
        "best": best,
        "runner_up": None,
        "best_vs_runner_up": None,
        "sentence": f"Best configuration: {best}",
    }
    (dataset / "samnet_report").mkdir()
    (dataset / "samnet_report" / "report.json").write_text(
        json.dumps({"best_configuration": selection})
    )


@pytest.fixture
def results(nnunet_folders: dict[str, Path]) -> Path:
    dataset = nnunet_folders["nnUNet_results"] / PREDICT_DATASET
    dataset.mkdir()
    return dataset


def medical_image(shape: tuple[int, int, int] = (5, 6, 7)) -> sitk.Image:
    """A 3D image (z, y, x) with a bright block and an oblique, anisotropic geometry."""
    array = np.zeros(shape, dtype=np.float32)
    array[1:4, 2:5, 1:5] = 100.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    return image


def natural_image() -> sitk.Image:
    array = np.zeros((9, 11), dtype=np.uint8)
    array[2:6, 3:9] = 200
    return sitk.GetImageFromArray(array)


def predict_folder(
    inputs: Path, output: Path, selection, runner: FakeModel | None = None
) -> dict:
    output.mkdir()
    channels = json.loads((selection.members[0].folder / "dataset.json").read_text())
    cases = cases_in_folder(inputs, len(channels["channel_names"]))
    options = Options(device="cpu", processes=1)
    return predict_cases(cases, output, selection, options, runner or FakeModel())


def test_ensemble_of_two_models_averages_their_probabilities(
    results: Path, tmp_path: Path
) -> None:
    """The report's best is SAM + nnU-Net: nnU-Net's ensembling gives the argmax of the mean."""
    shape = (4, 5, 6)
    rng = np.random.default_rng(0)
    sam, baseline = (
        rng.dirichlet([1, 1, 1], size=shape).transpose(3, 0, 1, 2).astype(np.float32)
        for _ in range(2)
    )
    np.save(write_model(results, SAM) / "probabilities.npy", sam)
    np.save(write_model(results, BASELINE) / "probabilities.npy", baseline)
    ensemble = f"{SAM}+{BASELINE}"
    write_report(
        results, ensemble, {SAM: [SAM], BASELINE: [BASELINE], ensemble: [SAM, BASELINE]}
    )
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(medical_image(shape), str(inputs / "case_0000.nii.gz"))

    selection = select_models(results, ["best"])
    runner = FakeModel()
    record = predict_folder(inputs, tmp_path / "out", selection, runner)

    assert [m.folder.name for m in selection.members] == [SAM, BASELINE]
    assert runner.calls == [
        (SAM, True),
        (BASELINE, True),
    ]  # probabilities kept for averaging
    predicted = sitk.GetArrayFromImage(
        sitk.ReadImage(str(tmp_path / "out" / "case.nii.gz"))
    )
    expected = ((sam + baseline) / 2).argmax(0)
    assert (predicted == expected).all()
    # the mean differs from either model alone, and from the most confident vote
    assert (expected != sam.argmax(0)).any() and (expected != baseline.argmax(0)).any()
    assert (expected != np.maximum(sam, baseline).argmax(0)).any()
    assert record["configuration"] == ensemble and record["outputs"] == ["case.nii.gz"]
    assert record["models"] == [
        {"model": SAM, "folds": [0]},
        {"model": BASELINE, "folds": [0]},
    ]


@pytest.mark.parametrize("determined", [True, False])
def test_postprocessing_nnunet_determined_is_applied_or_its_absence_said(
    results: Path, tmp_path: Path, determined: bool
) -> None:
    write_model(results, BASELINE)
    write_report(results, BASELINE, {BASELINE: [BASELINE]})
    folder = results / BASELINE / "crossval_results_folds_0"
    if determined:
        # What nnU-Net's determine_postprocessing writes beside its postprocessing.pkl
        folder.mkdir()
        (folder / POSTPROCESSING_SUMMARY).write_text(
            json.dumps(
                {
                    "postprocessing_fns": [
                        "remove_all_but_largest_component_from_segmentation"
                    ],
                    "postprocessing_kwargs": [{"labels_or_regions": 1}],
                }
            )
        )
    image = medical_image()
    array = sitk.GetArrayFromImage(image)
    array[4, 0, 0] = 100.0  # a one-voxel second component
    speck = sitk.GetImageFromArray(array)
    speck.CopyInformation(image)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(speck, str(inputs / "case.nii.gz"))

    selection = select_models(results, ["best"])
    record = predict_folder(inputs, tmp_path / "out", selection)

    predicted = sitk.GetArrayFromImage(
        sitk.ReadImage(str(tmp_path / "out" / "case.nii.gz"))
    )
    assert predicted[4, 0, 0] == (0 if determined else 1)
    assert predicted[1:4, 2:5, 1:5].all()
    if determined:
        assert record["postprocessing"] == str(folder / POSTPROCESSING_SUMMARY)
    else:
        assert record["postprocessing"] is None
        note = record["postprocessing_note"]
        assert note.startswith("none") and str(folder / POSTPROCESSING_SUMMARY) in note
        assert "nnUNetv2_determine_postprocessing" in note


FORMATS = [
    # (training data's file ending, input's ending)
    (".nii.gz", ".nii.gz"),
    (".nii.gz", ".mha"),
    (".nii.gz", ".nrrd"),
    (".mha", ".nii.gz"),
    (".png", ".png"),
    (".nii.gz", ".png"),
]


@pytest.mark.parametrize(("dataset_ending", "input_ending"), FORMATS)
def test_every_input_format_comes_back_in_its_format_and_geometry(
    results: Path, tmp_path: Path, dataset_ending: str, input_ending: str
) -> None:
    write_model(results, BASELINE, file_ending=dataset_ending)
    image = natural_image() if input_ending == ".png" else medical_image()
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(image, str(inputs / f"case_0000{input_ending}"))
    (inputs / "notes.txt").write_text("not an image")
    source = sitk.ReadImage(str(inputs / f"case_0000{input_ending}"))

    selection = select_models(results, ["nnUNetTrainer:nnUNetPlans:3d_fullres"])
    record = predict_folder(inputs, tmp_path / "out", selection)

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"case{input_ending}"
    ]
    assert record["converted_cases"] == int(input_ending != dataset_ending)
    output = sitk.ReadImage(str(tmp_path / "out" / f"case{input_ending}"))
    expected = sitk.GetArrayFromImage(source) > THRESHOLD
    assert (sitk.GetArrayFromImage(output) == expected).all()
    assert sitk.GetArrayFromImage(output).dtype == np.uint8
    if input_ending != ".png":
        assert output.GetSize() == source.GetSize()
        # NIfTI stores geometry in float32, the others in (text) doubles
        tolerance = 1e-6 if input_ending == ".nii.gz" else 1e-12
        for name in ("Spacing", "Origin", "Direction"):
            found, wanted = (
                getattr(output, f"Get{name}")(),
                getattr(source, f"Get{name}")(),
            )
            assert np.allclose(found, wanted, rtol=0, atol=tolerance), name


def test_channels_from_nnunet_naming_and_from_a_4d_file(
    results: Path, tmp_path: Path
) -> None:
    write_model(results, BASELINE, channels=("T1", "T2"))
    selection = select_models(results, ["nnUNetTrainer:nnUNetPlans:3d_fullres"])
    named, four_d = tmp_path / "named", tmp_path / "four_d"
    named.mkdir()
    four_d.mkdir()
    first, second = medical_image(), medical_image()
    sitk.WriteImage(first, str(named / "c_0000.nii.gz"))
    sitk.WriteImage(second * 0.5, str(named / "c_0001.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([first, second * 0.5]), str(four_d / "d.nii.gz"))

    for inputs, name in ((named, "c.nii.gz"), (four_d, "d.nii.gz")):
        predict_folder(inputs, tmp_path / f"out_{name}", selection)
        output = sitk.ReadImage(str(tmp_path / f"out_{name}" / name))
        mean = (sitk.GetArrayFromImage(first) * 1.5) / 2
        assert (sitk.GetArrayFromImage(output) == (mean > THRESHOLD)).all()
        assert output.GetDimension() == 3 and output.GetSize() == first.GetSize()
        assert np.allclose(output.GetDirection(), DIRECTION, atol=1e-6)
        assert np.allclose(output.GetOrigin(), ORIGIN, atol=1e-5)


def test_case_grouping(tmp_path: Path) -> None:
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert cases_in_folder(tmp_path, 2) == {
        "a": [tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"],
        "b": [tmp_path / "b_0000.nii.gz", tmp_path / "b_0001.nii.gz"],
    }
    # for a one-channel model, frames named like channels are cases of their own
    assert list(cases_in_folder(tmp_path, 1)) == [
        "a_0000",
        "a_0001",
        "b_0000",
        "b_0001",
    ]
    frames = tmp_path / "msd"
    frames.mkdir()
    (frames / "hippocampus_002.nii.gz").write_bytes(b"")
    assert cases_in_folder(frames, 1) == {
        "hippocampus_002": [frames / "hippocampus_002.nii.gz"]
    }
    (frames / "hippocampus_002.mha").write_bytes(b"")
    with pytest.raises(SamnetError, match="several files for case"):
        cases_in_folder(frames, 1)


def test_selection_errors_say_what_to_do(results: Path) -> None:
    write_model(results, BASELINE)
    with pytest.raises(SamnetError, match="samnet_compare") as missing_report:
        select_models(results, ["best"])
    assert "report.json" in str(missing_report.value.path)
    with pytest.raises(SamnetError, match="TRAINER:PLANS:CONFIG"):
        select_models(results, ["nnUNetTrainer__nnUNetPlans__2d"])
    with pytest.raises(SamnetError, match="not a trained model folder") as unknown:
        select_models(results, ["nnUNetTrainer:nnUNetPlans:2d"])
    assert BASELINE in unknown.value.fix  # lists what there is
    with pytest.raises(SamnetError, match="not trained") as fold:
        select_models(results, ["nnUNetTrainer:nnUNetPlans:3d_fullres"], folds=[3])
    assert fold.value.path == results / BASELINE / "fold_3" / FINAL_CHECKPOINT


def test_inputs_the_model_cannot_take_are_refused(
    results: Path, tmp_path: Path
) -> None:
    write_model(results, BASELINE, channels=("T1", "T2"))
    write_model(results, SAM, file_ending=".png")
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(medical_image(), str(inputs / "case.nii.gz"))
    two_channels = select_models(results, ["nnUNetTrainer:nnUNetPlans:3d_fullres"])
    with pytest.raises(
        SamnetError, match=r"has 1 channel\(s\).*takes 2 \(T1, T2\)"
    ) as channels:
        predict_folder(inputs, tmp_path / "out", two_channels)
    assert channels.value.path == inputs / "case.nii.gz"  # the user's file, not a copy
    png_model = select_models(results, ["nnUNetTrainerSAM:samnetPlans:sam_2d"])
    with pytest.raises(SamnetError, match="trained on .png 2D images"):
        predict_folder(inputs, tmp_path / "out_png", png_model)


def test_existing_output_is_kept_without_overwrite(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_model(results, BASELINE)
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    sitk.WriteImage(medical_image(), str(inputs / "case.nii.gz"))
    spec = "nnUNetTrainer:nnUNetPlans:3d_fullres"
    assert (
        main(["-d", "321", "-i", str(inputs), "-o", str(output), "--model", spec]) == 1
    )
    error = capsys.readouterr().err
    assert "already exists and is not empty" in error and "--overwrite" in error
    assert [p.name for p in output.iterdir()] == ["notes.txt"]


def test_help_imports_nothing_heavy() -> None:
    commands = ["samnet.cli.predict", "samnet.cli.export_msd"]
    commands += [
        "samnet.cli.validate_submission",
        "samnet.msd.export",
        "samnet.msd.validate",
    ]
    assert heavy_imports(commands, ("torch", "nnunetv2", "nibabel")) == []


# --- end to end: the session's trained demo (conftest), then the commands as a user runs them
