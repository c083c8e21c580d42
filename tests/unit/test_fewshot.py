"""Few-shot mode: support sets, prototypes, leave-one-out episodes, the prompt-free network,
training on a tiny synthetic set, the plan, and (slow) samnet_plan_and_train --few-shot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    CHEST_XRAY,
    CLASSES,
    HIPPOCAMPUS_LIKE,
    PATCH,
    TRAINING,
    VALIDATION,
    decision,
    plan,
)
from nnunetv2.training.dataloading.nnunet_dataset import (
    nnUNetDatasetBlosc2,
)

from samnet.core.errors import SamnetError
from samnet.core.sam_plan import FewShotPlan, SamPlan
from samnet.fewshot.prototypes import (
    class_fractions,
    episode_prototypes,
    pooled_sums,
    sums_per_slice,
    support_prototypes,
)
from samnet.fewshot.support_selection import (
    ResolvedSlice,
    SupportSlice,
    read_support_file,
    resolve_support,
    select_support,
)
from samnet.fewshot.support_set import SupportSet, encode_support, fold_support
from samnet.models.network import BASE_SHA256_KEY, build_network
from samnet.models.peft import PeftConfig, apply_peft, trainable_parameters
from samnet.models.prototype_head import PrototypeHead

INPUT_SIZE = 64
# The plan's PEFT in few-shot mode: decoder and head train, the encoder is frozen.
DECODER_AND_HEAD = PeftConfig(
    method="full", parts=("decoder",), trainable_extra=("class_head",)
)


def few_shot_network(pretrained: bool = False):
    network, _ = build_network(
        "lite_medsam", 1, CLASSES, INPUT_SIZE, pretrained=pretrained, head=PrototypeHead
    )
    return apply_peft(network, DECODER_AND_HEAD)


def perturb_trained(network: torch.nn.Module, seed: int) -> None:
    """Stand-in for training: move every trained parameter (the projection starts at 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in trainable_parameters(network):
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def synthetic_slices(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count x 1 x 32 x 32`` noisy images with a bright disk (label 1) and a dark square
    (label 2) at random places; labels ``count x 1 x 32 x 32``."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.3, (count, 1, *PATCH)).astype(np.float32)
    labels = np.zeros((count, 1, *PATCH), dtype=np.int64)
    y, x = np.mgrid[: PATCH[0], : PATCH[1]]
    for i in range(count):
        cy, cx = rng.integers(8, 24, size=2)
        disk = (y - cy) ** 2 + (x - cx) ** 2 <= 36
        sy, sx = rng.integers(2, 24, size=2)
        square = np.zeros(PATCH, dtype=bool)
        square[sy : sy + 7, sx : sx + 7] = True
        square &= ~disk
        labels[i, 0][disk], labels[i, 0][square] = 1, 2
        images[i, 0][disk] += 2.0
        images[i, 0][square] -= 2.0
    return torch.from_numpy(images), torch.from_numpy(labels)


# --- prototypes -------------------------------------------------------------------------


def test_prototypes_are_the_mean_embedding_over_each_class() -> None:
    """Each class region carries its own embedding vector: pooling recovers it exactly."""
    labels = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    labels[..., :16, :] = 1
    labels[..., 16:, 16:] = 2
    labels[..., 16:, :8] = -1  # outside the image: no class
    grid = (8, 8)
    vectors = torch.randn(CLASSES, 5)
    embedding = torch.zeros(1, 5, *grid)
    embedding[..., :4, :] = vectors[1, :, None, None]
    embedding[..., 4:, 4:] = vectors[2, :, None, None]
    embedding[..., 4:, 2:4] = vectors[0, :, None, None]
    embedding[..., 4:, :2] = 100.0  # under the outside region: must not leak in
    fractions = class_fractions(labels, CLASSES, grid)
    assert fractions.shape == (1, CLASSES, *grid)
    assert torch.allclose(fractions.sum(1)[0, :4], torch.ones(4, 8))
    sums, areas = pooled_sums(embedding, labels, CLASSES)
    assert sums.shape == (1, CLASSES, 5) and areas.shape == (1, CLASSES)
    assert areas[0].tolist() == [8.0, 32.0, 16.0]
    slice_sums, slice_areas = sums_per_slice(sums, areas, torch.tensor([0]), 1)
    prototypes = support_prototypes(slice_sums, slice_areas)
    assert prototypes.shape == (CLASSES, 5)
    assert torch.allclose(prototypes, vectors, atol=1e-6)


def test_leave_one_out_episodes_never_use_the_query_slice() -> None:
    """Slice s embeds as the basis vector e_s: a prototype's component s is slice s's share."""
    slices, windows_per_slice = 4, 2
    _, labels = synthetic_slices(slices * windows_per_slice, seed=0)
    window_slices = torch.arange(slices).repeat_interleave(windows_per_slice)
    embeddings = F.one_hot(window_slices, slices).float()[:, :, None, None]
    embeddings = embeddings.expand(-1, -1, 8, 8)
    sums, areas = pooled_sums(embeddings, labels, CLASSES)
    slice_sums, slice_areas = sums_per_slice(sums, areas, window_slices, slices)
    queries = torch.arange(slices).repeat(50)
    generator = torch.Generator().manual_seed(0)
    for keep in (1.0, 0.5):
        prototypes = episode_prototypes(
            slice_sums, slice_areas, queries, keep, generator
        )
        assert prototypes.shape == (len(queries), CLASSES, slices)
        own_share = prototypes[torch.arange(len(queries)), :, queries]
        assert torch.equal(own_share, torch.zeros_like(own_share))
        assert torch.allclose(prototypes.sum(-1), torch.ones(len(queries), CLASSES))
    # Leave-one-out (keep 1): the area-weighted mean of all other slices.
    loo = episode_prototypes(slice_sums, slice_areas, torch.tensor([0]), 1.0)[0]
    others = slice_areas[1:]
    expected = torch.cat(
        [torch.zeros(CLASSES, 1), others.T / others.sum(0)[:, None]], 1
    )
    assert torch.allclose(loo, expected, atol=1e-6)


def test_a_class_on_one_slice_only_falls_back_to_that_slice() -> None:
    """K = 1 (or a class drawn once): the only prototype there is is the query's own."""
    slice_sums = torch.randn(1, CLASSES, 4)
    slice_areas = torch.ones(1, CLASSES)
    prototypes = episode_prototypes(slice_sums, slice_areas, torch.tensor([0, 0]), 0.5)
    assert torch.allclose(prototypes, slice_sums.expand(2, -1, -1))


# --- support selection and support files ------------------------------------------------


def areas_of(cases: dict[str, list[tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """``{case: [(class-1 pixels, class-2 pixels) per slice]}`` as arrays."""
    return {case: np.array(rows) for case, rows in cases.items()}


CLASS_AREAS = areas_of(
    {
        # class 1 in slices 1-4, class 2 in slices 3-6: both only in 3-4
        f"case{i}": [(0, 0), (5, 0), (6, 0), (7, 3), (6, 4), (0, 5), (0, 4), (0, 0)]
        for i in range(6)
    }
    | {"empty": [(0, 0)] * 8, "only1": [(9, 0)] * 8}
)


@pytest.mark.parametrize("shots", [1, 3, 6, 12])
def test_automatic_support_spreads_over_cases_and_covers_every_class(shots) -> None:
    chosen = select_support(CLASS_AREAS, shots, seed=0)
    assert len(chosen) == len(set(chosen)) == shots
    assert "empty" not in {case for case, _ in chosen}
    labelled = [(case, z) for case, z in chosen if CLASS_AREAS[case][z].any()]
    shown = sum(CLASS_AREAS[case][z] > 0 for case, z in labelled)
    assert shown.all(), "every class is in some support slice"
    per_case = [case for case, _ in labelled]
    assert max(per_case.count(c) for c in per_case) == -(-len(labelled) // 7)
    # One slice in five shows no foreground: where a case's structures end.
    empty = [(case, z) for case, z in chosen if (case, z) not in labelled]
    assert len(empty) == shots // 5
    assert all(z in (0, 7) for _, z in empty)
    if shots == 1:
        assert chosen[0][1] in (3, 4), "one slice must show both classes"
    assert select_support(CLASS_AREAS, shots, seed=0) == chosen


def test_automatic_support_depends_on_the_seed_and_spreads_along_the_axis() -> None:
    draws = {tuple(select_support(CLASS_AREAS, 3, seed)) for seed in range(6)}
    assert len(draws) > 1
    slices = sorted(z for _, z in select_support({"case0": CLASS_AREAS["case0"]}, 3, 0))
    assert slices[0] <= 2 and slices[-1] >= 5, slices


def test_automatic_support_refuses_what_it_cannot_give() -> None:
    with pytest.raises(SamnetError, match="more slices than"):
        select_support({"case0": CLASS_AREAS["case0"]}, 9, seed=0)
    apart = areas_of({"a": [(5, 0), (0, 5)]})
    with pytest.raises(SamnetError, match="show no label 2"):
        select_support(apart, 1, seed=0)


def test_automatic_support_can_take_all_there_is_instead() -> None:
    one_case = {"case0": CLASS_AREAS["case0"]}
    chosen = select_support(one_case, 90, seed=0, at_most_available=True)
    assert sorted(chosen) == [("case0", z) for z in range(8)]
    assert select_support(one_case, 3, 0, at_most_available=True) == select_support(
        one_case, 3, 0
    )


def test_support_files_in_json_and_csv(tmp_path: Path) -> None:
    as_json = tmp_path / "support.json"
    as_json.write_text(json.dumps([{"case": "a", "slice": 3}, ["b", 0], {"case": "c"}]))
    as_csv = tmp_path / "support.csv"
    as_csv.write_text("case,slice\na,3\nb,0\nc,\n")
    expected = (SupportSlice("a", 3), SupportSlice("b", 0), SupportSlice("c", 0))
    assert read_support_file(as_json) == read_support_file(as_csv) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "lists no slices"),
        ("{", "not valid JSON"),
        ('[{"slice": 2}]', "entry 1 .* names no case"),
        ('[{"case": "a", "slice": -1}]', "not a non-negative integer"),
        ('[{"case": "a", "slice": 1.5}]', "not a non-negative integer"),
        ('[["a", 1], ["a", 1]]', "more than once"),
    ],
)
def test_bad_support_files_are_clear_errors(tmp_path: Path, content, message) -> None:
    path = tmp_path / "support.json"
    path.write_text(content)
    with pytest.raises(SamnetError, match=message) as error:
        read_support_file(path)
    assert error.value.path == path
    with pytest.raises(SamnetError, match="cannot be read"):
        read_support_file(tmp_path / "missing.json")


CROPS = {"a": (10, 2, 8), "b": (10, 0, 10)}


def test_user_support_is_located_after_nnunets_crop() -> None:
    resolved = resolve_support([SupportSlice("a", 5)], ["a", "b"], ["v"], CROPS)
    assert resolved == [ResolvedSlice("a", 5, 3)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (SupportSlice("v", 0), "validation case of this fold"),
        (SupportSlice("x", 0), "not a labelled case"),
        (SupportSlice("a", 10), "outside the image"),
        (SupportSlice("a", 9), "keeps only the non-zero slices 2..7"),
    ],
)
def test_user_support_refuses_leaks_and_bad_slices(entry, message) -> None:
    with pytest.raises(SamnetError, match=message):
        resolve_support([entry], ["a", "b"], ["v"], CROPS, "support.json")


# --- a tiny preprocessed dataset: fold support and encoding, no validation label read -----


class RecordingDataset:
    """nnU-Net's dataset, remembering which cases were read."""

    def __init__(self, folder: Path) -> None:
        self.dataset = nnUNetDatasetBlosc2(str(folder))
        self.read: list[str] = []

    def load_case(self, case: str):
        self.read.append(case)
        return self.dataset.load_case(case)


def test_fold_support_reads_no_validation_case(preprocessed: Path) -> None:
    dataset = RecordingDataset(preprocessed)
    slices = fold_support(
        FewShotPlan(3, seed=1), dataset, TRAINING, VALIDATION, CLASSES
    )
    assert len(slices) == 3 and {s.case for s in slices} <= set(TRAINING)
    assert all(s.slice == s.index + 2 for s in slices)
    network = few_shot_network()
    support = encode_support(network, dataset, slices, PATCH, CLASSES)
    assert "case4" not in dataset.read
    # 32 x 40 slices in 32 x 32 windows at tile step 0.5: 1 x 2 windows per slice.
    assert support.embeddings.shape == (6, 256, 16, 16)
    assert support.labels.shape == (6, 1, *PATCH)
    assert support.window_slices.tolist() == [0, 0, 1, 1, 2, 2]
    assert (support.class_area() > 0).all()
    assert support.prototypes().shape == (CLASSES, 256)


def test_listed_support_is_checked_against_the_fold(preprocessed: Path) -> None:
    dataset = RecordingDataset(preprocessed)
    plan = FewShotPlan(2, support=(("case1", 4), ("case2", 5)), support_file="s.json")
    slices = fold_support(plan, dataset, TRAINING, VALIDATION, CLASSES)
    assert [(s.case, s.index) for s in slices] == [("case1", 2), ("case2", 3)]
    leaking = dataclasses.replace(plan, support=(("case4", 4), ("case2", 5)))
    with pytest.raises(SamnetError, match="validation case"):
        fold_support(leaking, dataset, TRAINING, VALIDATION, CLASSES)
    assert "case4" not in dataset.read


# --- the network: prompt-free forward, trained-only checkpoints --------------------------


def test_forward_takes_only_images_and_uses_the_stored_prototypes() -> None:
    network = few_shot_network()
    perturb_trained(network, seed=0)
    network.eval()
    image = torch.randn(2, 1, *PATCH)
    with pytest.raises(SamnetError, match="holds no support prototypes"):
        network(image)
    prototypes = torch.randn(CLASSES, 256)
    network.class_head.set_support(prototypes, slices=3)
    with torch.no_grad():
        logits = network(image)
        embeddings = network.encode(image)
        expected = network.decode(embeddings, PATCH, prototypes.expand(2, -1, -1))
        other = network.decode(embeddings, PATCH, torch.randn(2, CLASSES, 256))
    assert logits.shape == (2, CLASSES, *PATCH)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert not torch.allclose(logits, other, atol=1e-3), "prototypes steer the output"


def test_trained_state_holds_the_prototypes_and_round_trips() -> None:
    trained = few_shot_network(pretrained=True)
    perturb_trained(trained, seed=1)
    trained.class_head.set_support(torch.randn(CLASSES, 256), slices=5)
    state = trained.trained_state_dict()
    assert "class_head.support_prototypes" in state
    assert int(state["class_head.support_slices"]) == 5
    assert not any(name.startswith("sam.image_encoder") for name in state)
    assert BASE_SHA256_KEY in state
    fresh = few_shot_network(pretrained=True)
    fresh.load_state_dict(state)
    image = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(image), trained.eval()(image))


def test_a_few_steps_reduce_the_leave_one_out_loss() -> None:
    """Decoder + prompt projection on 6 synthetic support slices, real LiteMedSAM weights."""
    torch.manual_seed(0)
    network = few_shot_network(pretrained=True)
    images, labels = synthetic_slices(6, seed=1)
    with torch.no_grad():
        embeddings = network.encode(images)
    support = SupportSet(
        slices=[ResolvedSlice(f"c{i}", 0, 0) for i in range(6)],
        embeddings=embeddings,
        labels=labels,
        window_slices=torch.arange(6),
        num_classes=CLASSES,
    )
    network.train()
    optimizer = torch.optim.AdamW(trainable_parameters(network), lr=1e-3)

    def loss_of(batch: dict) -> torch.Tensor:
        logits = network(batch["data"])
        return F.cross_entropy(logits, batch["target"][:, 0])

    held_out = support.episode(np.arange(6), keep=1.0)
    with torch.no_grad():
        before = loss_of(held_out).item()
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = support.episode(rng.choice(6, 4, replace=False), 0.5, generator)
        optimizer.zero_grad()
        loss_of(batch).backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_of(held_out).item()
    assert after < 0.6 * before, (before, after)


# --- the plan --------------------------------------------------------------------------


def test_the_planner_turns_few_shot_on_when_labels_are_tiny_and_says_why() -> None:
    tiny = plan(dataclasses.replace(CHEST_XRAY, labelled_cases=12))
    assert tiny.sam.few_shot == FewShotPlan(9)
    assert tiny.sam.encoder_mode == "cached"
    assert "Xie et al." in decision(tiny, "few_shot")["because"]
    assert decision(tiny, "few_shot")["value"] == "K=9, automatic (seed 0)"
    assert plan(CHEST_XRAY).sam.few_shot is None
    assert plan(HIPPOCAMPUS_LIKE).sam.few_shot is None
    assert decision(plan(CHEST_XRAY), "few_shot")["value"] == "off"


def test_few_shot_k_forces_it_and_survives_json() -> None:
    result = plan(HIPPOCAMPUS_LIKE, few_shot=5, few_shot_seed=3)
    assert result.sam.few_shot == FewShotPlan(5, seed=3)
    assert result.sam.peft["parts"] == ["decoder"]
    data = json.loads(json.dumps(result.sam.to_dict()))
    assert SamPlan.from_dict(data).to_dict() == data
    del data["few_shot"]  # plans written before few-shot mode still load
    assert SamPlan.from_dict(data).few_shot is None


def test_support_file_sets_k_and_conflicts_are_refused(tmp_path: Path) -> None:
    support = tmp_path / "support.csv"
    support.write_text("case,slice\nhippocampus_001,10\nhippocampus_002,12\n")
    result = plan(HIPPOCAMPUS_LIKE, support=str(support))
    assert result.sam.few_shot.support == (
        ("hippocampus_001", 10),
        ("hippocampus_002", 12),
    )
    assert result.sam.few_shot.shots == 2
    with pytest.raises(SamnetError, match="lists 2 support slices"):
        plan(HIPPOCAMPUS_LIKE, support=str(support), few_shot=3)
    with pytest.raises(SamnetError, match="few-shot mode trains the decoder"):
        plan(HIPPOCAMPUS_LIKE, few_shot=2, peft="lora")
    with pytest.raises(SamnetError, match="few-shot mode trains the decoder"):
        plan(HIPPOCAMPUS_LIKE, few_shot=2, encoder_mode="trained")


# --- end to end ------------------------------------------------------------------------
