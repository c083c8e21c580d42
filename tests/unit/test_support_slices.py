"""nnU-Net on the few-shot support slices only: the dataset it trains on, its plan, and
(slow) a fold trained next to few-shot SAM on the same slices."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import CLASSES, HIPPOCAMPUS_LIKE, PATCH, TRAINING, VALIDATION, plan
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from samnet.core.errors import SamnetError
from samnet.core.sam_plan import FewShotPlan
from samnet.fewshot.support_set import fold_support
from samnet.trainers.support_slices_trainer import (
    SupportSliceDataset,
    nnUNetTrainerSupportSlices,
    nnUNetTrainerSupportSlices10x,
)

LABELS = {"background": 0, "one": 1, "two": 2}


def support_dataset(folder: Path, shots: int) -> SupportSliceDataset:
    dataset = nnUNetDatasetBlosc2(str(folder), list(TRAINING))
    slices = fold_support(
        FewShotPlan(shots, seed=1), dataset, TRAINING, VALIDATION, CLASSES
    )
    return SupportSliceDataset(dataset, slices, [1, 2])


def test_each_support_slice_is_a_case_of_one_slice(preprocessed: Path) -> None:
    support = support_dataset(preprocessed, shots=3)
    assert len(support.identifiers) == 3
    whole = nnUNetDatasetBlosc2(str(preprocessed), list(TRAINING))
    for identifier in support.identifiers:
        case, index = identifier.split("@")
        data, seg, previous, properties = support.load_case(identifier)
        full_data, full_seg, _, _ = whole.load_case(case)
        assert data.shape == (1, 1, 32, 40) and previous is None
        np.testing.assert_array_equal(data[:, 0], full_data[:, int(index)])
        np.testing.assert_array_equal(seg[:, 0], full_seg[:, int(index)])
        for label in (1, 2):
            locations = properties["class_locations"][label]
            assert len(locations) == (seg == label).sum()
            assert (locations[:, 1] == 0).all()
            assert (seg[tuple(locations.T)] == label).all()


def test_more_slices_than_labelled_is_refused_or_all_of_them(
    preprocessed: Path,
) -> None:
    dataset = nnUNetDatasetBlosc2(str(preprocessed), list(TRAINING))
    too_many = FewShotPlan(1000, seed=1)
    with pytest.raises(SamnetError, match="more slices than"):
        fold_support(too_many, dataset, TRAINING, VALIDATION, CLASSES)
    slices = fold_support(
        too_many, dataset, TRAINING, VALIDATION, CLASSES, at_most_available=True
    )
    every_slice = {
        (case, z)
        for case in TRAINING
        for z in range(dataset.load_case(case)[1].shape[1])
    }
    assert {(s.case, s.index) for s in slices} == every_slice
    assert len(slices) == len(every_slice)


def test_nnunets_loader_draws_2d_batches_of_support_slices_only(
    preprocessed: Path,
) -> None:
    support = support_dataset(preprocessed, shots=2)
    loader = nnUNetDataLoader(
        support,
        4,
        PATCH,
        PATCH,
        LabelManager(LABELS, regions_class_order=None),
        oversample_foreground_percent=0.5,
    )
    batch = next(loader)
    assert batch["data"].shape == (4, 1, *PATCH)
    assert batch["target"].shape == (4, 1, *PATCH)
    assert set(batch["keys"]) <= set(support.identifiers)


def trainer_with(few_shot: dict | None, trainer_class: type) -> SimpleNamespace:
    """What ``support_plan`` reads of a trainer: its plans and its shots factor."""
    configurations = {"2d": {}}
    if few_shot is not None:
        sam = plan(HIPPOCAMPUS_LIKE, few_shot=few_shot["shots"]).sam.to_dict()
        configurations["sam_2d"] = {"sam": {**sam, "few_shot": few_shot}}
    plans = {"configurations": configurations}
    manager = SimpleNamespace(plans=plans, plans_name="samnetPlans")
    return SimpleNamespace(
        plans_manager=manager, SHOTS_FACTOR=trainer_class.SHOTS_FACTOR
    )


def test_shots_come_from_the_sam_plan_times_the_factor() -> None:
    automatic = {"shots": 5, "seed": 2, "support": None, "support_file": None}
    same = trainer_with(automatic, nnUNetTrainerSupportSlices)
    assert nnUNetTrainerSupportSlices.support_plan(same) == FewShotPlan(5, seed=2)
    tenfold = trainer_with(automatic, nnUNetTrainerSupportSlices10x)
    assert nnUNetTrainerSupportSlices.support_plan(tenfold) == FewShotPlan(50, seed=2)


def test_missing_or_listed_support_is_a_clear_error() -> None:
    with pytest.raises(SamnetError, match="no few-shot plan"):
        nnUNetTrainerSupportSlices.support_plan(
            trainer_with(None, nnUNetTrainerSupportSlices)
        )
    listed = {
        "shots": 1,
        "seed": 0,
        "support": [["case1", 4]],
        "support_file": "s.json",
    }
    with pytest.raises(SamnetError, match="listed by the user"):
        nnUNetTrainerSupportSlices.support_plan(
            trainer_with(listed, nnUNetTrainerSupportSlices10x)
        )
