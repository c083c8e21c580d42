"""SAMPlanner through nnU-Net's planning API and samnet_plan, on a small synthetic dataset.

Runs go through subprocesses: nnU-Net reads its folders at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import demo_environment

from samnet.core.sam_plan import SamPlan

DEMO_ID = 992
NAME = "Dataset992_SamnetDemo"

pytestmark = pytest.mark.slow


def run(environment: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *command],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def samnet_plan(
    environment: dict[str, str], *arguments: str
) -> subprocess.CompletedProcess:
    return run(
        environment,
        "-m",
        "samnet.cli.plan",
        str(DEMO_ID),
        "--device",
        "cpu",
        *arguments,
    )


@pytest.fixture(scope="module")
def planned(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, str], Path, str]:
    """The demo dataset planned by samnet_plan --explain and by nnU-Net's own planner."""
    root = tmp_path_factory.mktemp("planner")
    environment = demo_environment(root, DEMO_ID, num_training=12, num_test=2)
    explained = samnet_plan(environment, "--explain")
    assert explained.returncode == 0, explained.stderr[-3000:]
    baseline = run(
        environment,
        "-c",
        "from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset\n"
        f"plan_experiment_dataset({DEMO_ID})",
    )
    assert baseline.returncode == 0, baseline.stderr[-3000:]
    return environment, root / "preprocessed" / NAME, explained.stdout


def test_nnunet_configurations_are_nnunets_own_and_share_its_data(planned) -> None:
    _, folder, _ = planned
    sam = json.loads((folder / "samnetPlans.json").read_text())
    nnunet = json.loads((folder / "nnUNetPlans.json").read_text())
    assert set(sam["configurations"]) == set(nnunet["configurations"]) | {"sam_2d"}
    for name, configuration in nnunet["configurations"].items():
        assert sam["configurations"][name] == configuration, name
    for key in (
        "transpose_forward",
        "transpose_backward",
        "foreground_intensity_properties_per_channel",
    ):
        assert sam[key] == nnunet[key]


def test_sam_configuration_holds_a_readable_plan(planned) -> None:

    _, folder, explained = planned
    plans_file = folder / "samnetPlans.json"
    plans = json.loads(plans_file.read_text())
    configuration = plans["configurations"]["sam_2d"]
    sam = SamPlan.from_dict(configuration["sam"], plans_file)
    assert (
        configuration["patch_size"] == [sam.input_size] * 2
        or max(configuration["patch_size"]) < sam.input_size
    )
    assert configuration["batch_size"] == sam.budget.batch_size
    assert configuration["spacing"] == list(sam.in_plane_spacing)
    # 12 labelled cases planned on CPU: the frozen encoder is cached
    assert sam.encoder_mode == "cached"
    fingerprint = plans["samnet"]["fingerprint"]
    assert fingerprint["labelled_cases"] == 12
    assert fingerprint["unlabelled_cases"] == 2
    assert [c["name"] for c in fingerprint["classes"]] == ["part_a", "part_b"]
    assert plans["samnet"]["hardware"]["device"] == "cpu"
    for decision in configuration["sam"]["decisions"]:
        assert decision["what"] in explained
    assert "because" in explained and "machine:  CPU" in explained


def test_existing_plan_is_kept_and_other_overrides_need_overwrite(planned) -> None:
    environment, folder, _ = planned
    plans_file = folder / "samnetPlans.json"
    before = plans_file.read_text()
    kept = samnet_plan(environment)
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert plans_file.read_text() == before
    refused = samnet_plan(environment, "--input-size", "64")
    assert refused.returncode == 1
    assert "samnetPlans.json" in refused.stderr and "--overwrite" in refused.stderr
    assert plans_file.read_text() == before
    replanned = samnet_plan(
        environment, "--input-size", "64", "--overwrite", "--explain"
    )
    assert replanned.returncode == 0, replanned.stderr[-2000:]
    sam = json.loads(plans_file.read_text())["configurations"]["sam_2d"]["sam"]
    assert sam["input_size"] == 64
    assert "set by the user (--input-size)" in replanned.stdout
