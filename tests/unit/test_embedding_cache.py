"""The frozen-encoder embedding cache: nnU-Net's windows, exact reuse, safe builds, prefixes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from helpers import fingerprint, plan
from nnunetv2.inference.sliding_window_prediction import (
    compute_steps_for_sliding_window,
)
from nnunetv2.training.dataloading.nnunet_dataset import (
    comp_blosc2_params,
    nnUNetDatasetBlosc2,
)
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from segment_anything.modeling import ImageEncoderViT
from torch import nn

import samnet.preprocessing.cache.build as build_module
from samnet.core.errors import SamnetError
from samnet.core.layout import CACHE_FOLDER, CACHE_INFO_FILE
from samnet.models.encoder_prefix import (
    frozen_prefix_stages,
    split_image_encoder,
)
from samnet.models.fast_encoder import FastEncoder
from samnet.models.network import EncodedImages, SamSegmentationNetwork, build_network
from samnet.models.peft import PeftConfig, apply_peft
from samnet.preprocessing.cache.build import build_embedding_cache, cache_key
from samnet.preprocessing.cache.embedding_cache import (
    EmbeddingCache,
    key_digest,
    sample_batches,
)
from samnet.preprocessing.cache.views import CacheView, ViewedCaches
from samnet.trainers.cached_trainer import nnUNetTrainerSAMCached

PATCH = (32, 32)
INPUT_SIZE = 64
DATA_IDENTIFIER = "nnUNetPlans_2d"
# C x Z x H x W of each case: a 2-slice volume larger than the patch (2 x 3 windows per
# slice) and a 2D image (Z = 1) narrower than the patch in y (padded, 1 x 2 windows).
CASES = {"case_a": (1, 2, 40, 56), "case_b": (1, 1, 20, 44)}
WINDOWS = 2 * 2 * 3 + 1 * 1 * 2
# float16 keeps 11 significant bits: each cached value is within 2**-11 (relative) of
# the float32 embedding. The decoder (attention, MLPs, layer norms) carries such an
# input perturbation through roughly unchanged in relative size; 1% of the logits'
# range leaves ample margin (measured: below 0.1%).
FLOAT16_TOLERANCE = 1e-2


def configuration() -> ConfigurationManager:
    """The parts of an nnU-Net 2d configuration the cache reads."""
    return ConfigurationManager(
        {
            "data_identifier": DATA_IDENTIFIER,
            "patch_size": list(PATCH),
            "spacing": [1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False],
            "architecture": {},
        }
    )


def write_case(folder: Path, name: str, shape: tuple[int, ...], seed: int) -> None:
    """A preprocessed case in nnU-Net's own storage: z-scored data, labels 0-2, -1 outside."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape).astype(np.float32)
    seg = rng.integers(0, 3, size=(1, *shape[1:])).astype(np.int8)
    seg[..., :3] = -1
    blocks, chunks = comp_blosc2_params(data.shape, PATCH)
    nnUNetDatasetBlosc2.save_case(
        data, seg, {}, str(folder / name), chunks=chunks, blocks=blocks
    )


@pytest.fixture
def dataset_folder(tmp_path: Path) -> Path:
    """``nnUNet_preprocessed/Dataset999_Tiny`` with the ``CASES`` of one 2d configuration."""
    folder = tmp_path / "Dataset999_Tiny"
    (folder / DATA_IDENTIFIER).mkdir(parents=True)
    for seed, (name, shape) in enumerate(CASES.items()):
        write_case(folder / DATA_IDENTIFIER, name, shape, seed)
    return folder


@pytest.fixture(scope="module")
def network_and_weights():
    network, weights = build_network("lite_medsam", 1, 3, INPUT_SIZE, pretrained=False)
    return network.eval(), weights


@pytest.fixture(scope="module")
def branch_network_and_weights():
    """A network with an image branch whose output is not zero (as after training)."""
    network, weights = build_network(
        "lite_medsam", 1, 3, INPUT_SIZE, pretrained=False, image_branch=True
    )
    with torch.no_grad():
        network.image_branch.out.weight.normal_(std=0.1)
    return network.eval(), weights


def build(network_and_weights, folder: Path, **options) -> EmbeddingCache:
    network, weights = network_and_weights
    return build_embedding_cache(network, weights, configuration(), folder, **options)


def expected_windows(
    folder: Path,
) -> list[tuple[int, int, int, int, np.ndarray, np.ndarray]]:
    """(case, slice, y0, x0, image window, label window), derived with nnU-Net's functions."""
    dataset = nnUNetDatasetBlosc2(str(folder / DATA_IDENTIFIER))
    windows = []
    for number, case in enumerate(dataset.identifiers):
        data, seg, _, _ = dataset.load_case(case)
        for z in range(data.shape[1]):
            image = pad_nd_image(
                torch.from_numpy(data[:, z]), PATCH, "constant", {"value": 0}
            )
            label = pad_nd_image(seg[0, z], PATCH, "constant", {"constant_values": -1})
            steps = compute_steps_for_sliding_window(image.shape[1:], PATCH, 0.5)
            for y0 in steps[0]:
                for x0 in steps[1]:
                    window = (slice(y0, y0 + PATCH[0]), slice(x0, x0 + PATCH[1]))
                    windows.append(
                        (
                            number,
                            z,
                            y0,
                            x0,
                            image[(slice(None), *window)],
                            label[window],
                        )
                    )
    return windows


def count_encoder_calls(
    network: SamSegmentationNetwork, monkeypatch, fail_at=None
) -> list:
    """Record each batch the input adapter (first step of every encoding) sees."""
    calls = []
    forward = network.input_adapter.forward

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("injected failure")
        return forward(x)

    monkeypatch.setattr(network.input_adapter, "forward", counting)
    return calls


def test_windows_follow_nnunet_sliding_window(
    network_and_weights, dataset_folder
) -> None:
    cache = build(network_and_weights, dataset_folder)
    expected = expected_windows(dataset_folder)
    assert len(cache) == len(expected) == WINDOWS
    assert cache.cases == ("case_a", "case_b")
    assert [tuple(row[:4]) for row in cache.index] == [w[:4] for w in expected]
    assert {(w[2], w[3]) for w in expected if w[0] == 0} == {
        (y, x) for y in (0, 8) for x in (0, 12, 24)
    }
    rows = np.arange(WINDOWS)
    labels = cache.labels(rows)
    assert labels.dtype == torch.long and labels.shape == (WINDOWS, 1, *PATCH)
    assert torch.equal(
        labels[:, 0], torch.stack([torch.from_numpy(w[5]).long() for w in expected])
    )
    assert (labels == -1).any(), "outside marks and padding stay -1"
    foreground = [int((w[5] > 0).sum()) for w in expected]
    assert cache.index[:, 4].tolist() == foreground
    assert not cache.has_images and not (cache.folder / "images.npy").exists()
    with pytest.raises(ValueError, match="holds no images"):
        cache.images([0])
    info = json.loads((cache.folder / CACHE_INFO_FILE).read_text())
    assert cache.folder.parent.name == CACHE_FOLDER
    assert info["windows"] == WINDOWS and info["feature_shape"] == [256, 16, 16]
    assert info["key_inputs"]["patch_size"] == list(PATCH)


def test_decoded_cache_matches_the_network(network_and_weights, dataset_folder) -> None:
    network, _ = network_and_weights
    cache = build(network_and_weights, dataset_folder, batch_size=4)
    windows = torch.stack([w[4] for w in expected_windows(dataset_folder)])
    with torch.no_grad():
        embeddings = network.encode(windows)
        logits = network(windows)
        cached = network.decode(cache.embeddings(np.arange(WINDOWS)), PATCH)
        rounded = network.decode(embeddings.half().float(), PATCH)
    assert cache.embeddings([0]).dtype == torch.float32
    # The cache holds exactly the float16-rounded float32 embedding...
    assert torch.equal(cache.embeddings(np.arange(WINDOWS)), embeddings.half().float())
    assert torch.allclose(cached, rounded, atol=1e-6)
    # ...so its logits differ from the uncached network's by float16 rounding only.
    error = (cached - logits).abs().max() / logits.abs().max()
    assert error < FLOAT16_TOLERANCE


def test_second_build_reuses_the_cache(
    network_and_weights, dataset_folder, monkeypatch
) -> None:
    first = build(network_and_weights, dataset_folder)
    written = (first.folder / "features.npy").stat().st_mtime_ns
    calls = count_encoder_calls(network_and_weights[0], monkeypatch)
    second = build(network_and_weights, dataset_folder)
    assert calls == []
    assert second.folder == first.folder
    assert (second.folder / "features.npy").stat().st_mtime_ns == written


def test_interrupted_build_leaves_nothing_and_the_next_succeeds(
    network_and_weights, dataset_folder, monkeypatch
) -> None:
    with monkeypatch.context() as patch:
        calls = count_encoder_calls(network_and_weights[0], patch, fail_at=2)
        with pytest.raises(RuntimeError, match="injected failure"):
            build(network_and_weights, dataset_folder, batch_size=4)
    assert calls == [4, 4]
    assert not [p for p in (dataset_folder / CACHE_FOLDER).iterdir() if p.is_dir()]
    assert len(build(network_and_weights, dataset_folder, batch_size=4)) == WINDOWS


def test_leftovers_of_killed_builds_are_removed(
    network_and_weights, dataset_folder
) -> None:
    folder = build(network_and_weights, dataset_folder).folder
    (folder / CACHE_INFO_FILE).unlink()  # a folder that was never completed
    partial = folder.with_name(f".{folder.name}.x1y2.partial")
    partial.mkdir()
    cache = build(network_and_weights, dataset_folder)
    assert len(cache) == WINDOWS and not partial.exists()


@pytest.mark.parametrize(
    "change",
    [("key_inputs", "input_size", 128), ("windows", None, 3), (None, None, "{")],
)
def test_mismatched_cache_json_is_a_clear_error(
    network_and_weights, dataset_folder, change
) -> None:
    info_file = build(network_and_weights, dataset_folder).folder / CACHE_INFO_FILE
    field, subfield, value = change
    info = json.loads(info_file.read_text())
    if field is None:
        info_file.write_text(value)
    else:
        if subfield is None:
            info[field] = value
        else:
            info[field][subfield] = value
        info_file.write_text(json.dumps(info))
    with pytest.raises(SamnetError) as error:
        build(network_and_weights, dataset_folder)
    assert error.value.path == info_file
    assert "delete the folder" in error.value.fix


def test_missing_preprocessed_data_is_a_clear_error(
    network_and_weights, tmp_path
) -> None:
    with pytest.raises(SamnetError, match="no preprocessed cases"):
        build(network_and_weights, tmp_path)


def test_rows_by_case_and_seeded_batches(network_and_weights, dataset_folder) -> None:
    cache = build(network_and_weights, dataset_folder)
    rows = cache.rows_for_cases(["case_b"])
    assert rows.tolist() == [WINDOWS - 2, WINDOWS - 1]
    assert len(cache.rows_for_cases(["case_a", "case_b"])) == WINDOWS
    with pytest.raises(SamnetError, match="case_z"):
        cache.rows_for_cases(["case_z"])
    training = cache.rows_for_cases(["case_a"])
    batches = sample_batches(training, batch_size=4, seed=3)
    first_pass = np.concatenate([next(batches) for _ in range(3)])
    assert sorted(first_pass.tolist()) == training.tolist()
    again = sample_batches(training, batch_size=4, seed=3)
    assert np.array_equal(np.concatenate([next(again) for _ in range(3)]), first_pass)


def test_reading_is_memory_mapped(network_and_weights, dataset_folder) -> None:
    cache = build(network_and_weights, dataset_folder)
    assert (
        isinstance(cache._features, np.memmap) and cache._features.dtype == np.float16
    )
    assert isinstance(cache._labels, np.memmap) and cache._labels.dtype == np.int16
    batch = cache.embeddings([3, 1])
    assert torch.equal(
        batch, torch.from_numpy(cache._features[[3, 1]].astype(np.float32))
    )
    assert not np.shares_memory(batch.numpy(), cache._features)


def tiny_vit_encoder() -> ImageEncoderViT:
    """A 4-block SAM ViT with windowed and global attention and relative positions."""
    encoder = ImageEncoderViT(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=4,
        num_heads=2,
        out_chans=16,
        use_rel_pos=True,
        window_size=2,
        global_attn_indexes=(1, 3),
    )
    nn.init.normal_(encoder.pos_embed)
    return encoder.eval()


@pytest.mark.parametrize("kind", ["tiny_vit", "sam_vit"])
def test_prefix_and_rest_equal_the_encoder_exactly(network_and_weights, kind) -> None:
    if kind == "tiny_vit":
        encoder, size = network_and_weights[0].sam.image_encoder, INPUT_SIZE
        stages = 4
    else:
        encoder, size, stages = tiny_vit_encoder(), 32, 4
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        reference = encoder(x)
        for k in range(stages + 1):
            prefix, rest = split_image_encoder(encoder, k)
            assert torch.equal(rest(prefix(x)), reference), f"split after {k} stages"
    with pytest.raises(SamnetError, match="has 4"):
        split_image_encoder(encoder, 5)


def test_prefix_cache_feeds_the_rest(network_and_weights, dataset_folder) -> None:
    network, _ = network_and_weights
    full = build(network_and_weights, dataset_folder)
    cache = build(network_and_weights, dataset_folder, prefix_stages=3)
    assert (
        cache.folder != full.folder and cache.info["key_inputs"]["prefix_stages"] == 3
    )
    assert cache.info["feature_shape"] == [320, 16, 16]  # layers.2 output: 320 channels
    _, rest = split_image_encoder(network.sam.image_encoder, 3)
    windows = torch.stack([w[4] for w in expected_windows(dataset_folder)])
    with torch.no_grad():
        logits = network(windows)
        features = cache.embeddings(np.arange(WINDOWS))
        cached = network.decode(rest(features), PATCH)
        encoded = network(EncodedImages(features, PATCH, prefix_stages=3))
    assert (cached - logits).abs().max() / logits.abs().max() < FLOAT16_TOLERANCE
    assert torch.equal(encoded, cached)  # what the cached trainer's batches give


def test_fast_encoder_builds_the_same_cache(
    network_and_weights, dataset_folder, monkeypatch
) -> None:
    plain = build(network_and_weights, dataset_folder)
    reference = plain.embeddings(np.arange(WINDOWS))
    made = []
    monkeypatch.setattr(
        build_module,
        "FastEncoder",
        lambda encoder, compile: made.append(compile) or FastEncoder(encoder, compile),
    )
    for path in plain.folder.iterdir():
        path.unlink()
    plain.folder.rmdir()
    fast = build(network_and_weights, dataset_folder, fast=True)
    error = (fast.embeddings(np.arange(WINDOWS)) - reference).abs().max()
    assert error / reference.abs().max() < FLOAT16_TOLERANCE
    # 14 windows at 64 px: compiling (a minute or two) would not pay.
    assert made == [False]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (PeftConfig(method="frozen"), 4),
        (
            PeftConfig(
                method="lora", parts=("encoder", "decoder"), encoder_blocks=(-2, -1)
            ),
            3,
        ),
        (PeftConfig(method="adapter", parts=("encoder",)), 1),
    ],
)
def test_frozen_prefix_follows_peft(config: PeftConfig, expected: int) -> None:
    network, _ = build_network("lite_medsam", 1, 3, INPUT_SIZE, pretrained=False)
    apply_peft(network, config)
    assert frozen_prefix_stages(network.sam.image_encoder) == expected


def test_a_trained_patch_embedding_cannot_be_cached() -> None:
    network, _ = build_network("lite_medsam", 1, 3, INPUT_SIZE, pretrained=False)
    apply_peft(network, PeftConfig(method="full", parts=("encoder",)))
    with pytest.raises(SamnetError, match="patch embedding trains"):
        frozen_prefix_stages(network.sam.image_encoder)


def test_cache_is_rebuilt_when_the_preprocessed_labels_change(
    network_and_weights, dataset_folder
) -> None:
    old = build(network_and_weights, dataset_folder)
    old_labels = old.labels(np.arange(len(old))).clone()
    # Labels fixed and the data preprocessed again: same cases, same shapes, other labels.
    for stored in (dataset_folder / DATA_IDENTIFIER).glob("case_a*"):
        stored.unlink()  # as nnU-Net's preprocessing empties the folder first
    write_case(dataset_folder / DATA_IDENTIFIER, "case_a", CASES["case_a"], seed=11)
    new = build(network_and_weights, dataset_folder)
    assert new.folder == old.folder, "rebuilt in place: no stale copy left on disk"
    assert [
        p.name for p in (dataset_folder / CACHE_FOLDER).iterdir() if p.is_dir()
    ] == [new.folder.name]
    new_labels = new.labels(np.arange(len(new)))
    rows_a = new.rows_for_cases(["case_a"])
    rows_b = new.rows_for_cases(["case_b"])
    assert not np.array_equal(new_labels[rows_a], old_labels[rows_a])
    assert np.array_equal(new_labels[rows_b], old_labels[rows_b])
    assert new.info["data_sha256"] != old.info["data_sha256"]


def test_cache_is_rebuilt_when_cases_are_added(
    network_and_weights, dataset_folder
) -> None:
    old = build(network_and_weights, dataset_folder)
    write_case(dataset_folder / DATA_IDENTIFIER, "case_c", (1, 1, 32, 32), seed=7)
    new = build(network_and_weights, dataset_folder)
    assert new.cases == ("case_a", "case_b", "case_c")
    assert len(new) == len(old) + 1


def mirrors() -> CacheView:
    """A view that mirrors each window along random axes: image and label must move alike."""
    return CacheView(1, MirrorTransform(allowed_axes=(0, 1)), "mirror")


def test_a_view_augments_image_and_label_alike_and_draws_the_same_again() -> None:
    label = np.random.default_rng(0).integers(0, 3, size=(32, 32)).astype(np.int16)
    image = label[None].astype(np.float32)
    views = [mirrors()(image, label, row) for row in range(8)]
    for augmented_image, augmented_label in views:
        np.testing.assert_array_equal(augmented_image[0], augmented_label)
    flipped = [not np.array_equal(v_label, label) for _, v_label in views]
    assert any(flipped) and not all(flipped)  # random mirrors, seeded per row
    _, again_label = mirrors()(image, label, 3)
    np.testing.assert_array_equal(again_label, views[3][1])


def test_augmented_views_are_caches_of_their_own_read_as_one(
    network_and_weights, dataset_folder
) -> None:
    plain = build(network_and_weights, dataset_folder)
    view = build(network_and_weights, dataset_folder, view=mirrors())
    assert view.folder != plain.folder
    # The windows as they are keep their cache: building a view does not rename it.
    assert build(network_and_weights, dataset_folder).folder == plain.folder
    assert view.info["key_inputs"]["view"] == 1
    both = ViewedCaches([plain, view])
    assert len(both) == 2 * len(plain)
    rows = both.rows_for_cases(["case_b"])
    assert list(rows) == [
        *plain.rows_for_cases(["case_b"]),
        *(plain.rows_for_cases(["case_b"]) + len(plain)),
    ]
    mixed = np.array([len(plain) + 1, 0, len(plain), 2])
    np.testing.assert_array_equal(
        both.labels(mixed).numpy(),
        np.stack(
            [
                view.labels([1])[0],
                plain.labels([0])[0],
                view.labels([0])[0],
                plain.labels([2])[0],
            ]
        ),
    )
    assert torch.equal(both.embeddings(mixed)[0], view.embeddings([1])[0])
    # A mirrored window's label is its original's, mirrored (or the same, unmirrored).
    for row in range(len(plain)):
        original, augmented = plain.labels([row])[0, 0], view.labels([row])[0, 0]
        assert any(
            torch.equal(augmented, original.flip(axes))
            for axes in ((), (0,), (1,), (0, 1))
        )
    assert both.info["build_seconds"] == pytest.approx(
        plain.info["build_seconds"] + view.info["build_seconds"]
    )


def test_the_key_names_the_precision_and_float32_caches_keep_their_names(
    network_and_weights, dataset_folder, monkeypatch
) -> None:
    network, weights = network_and_weights
    encoder = network.sam.image_encoder
    keys = {
        dtype: cache_key(network, encoder, weights, configuration(), None, dtype)
        for dtype in ("float32", "float16")
    }
    assert keys["float16"].digest() != keys["float32"].digest()
    # Named as before the key recorded the precision: existing CPU caches are reused.
    inputs = dataclasses.asdict(keys["float32"])
    del inputs["compute_dtype"]
    assert key_digest(inputs) == keys["float32"].digest()
    cache = build(network_and_weights, dataset_folder)  # on CPU: float32, as before
    assert cache.folder.name == keys["float32"].digest()
    assert cache.info["key_inputs"]["compute_dtype"] == "float32"
    assert cache.info["feature_dtype"] == "float16"
    # A cache.json written before the field existed still reads, and is reused.
    info_file = cache.folder / CACHE_INFO_FILE
    info = json.loads(info_file.read_text())
    del info["key_inputs"]["compute_dtype"]
    info_file.write_text(json.dumps(info))
    calls = count_encoder_calls(network, monkeypatch)
    assert len(build(network_and_weights, dataset_folder)) == WINDOWS
    assert calls == []


def test_features_float16_cannot_hold_are_refused(dataset_folder) -> None:
    network, weights = build_network("lite_medsam", 1, 3, INPUT_SIZE, pretrained=False)
    with torch.no_grad():
        network.sam.image_encoder.neck[-1].weight.fill_(1e6)  # beyond 65504
    with pytest.raises(SamnetError, match="not finite in float16") as error:
        build((network.eval(), weights), dataset_folder)
    assert "--encoder-mode trained" in error.value.fix
    assert not [p for p in (dataset_folder / CACHE_FOLDER).iterdir() if p.is_dir()]


def cached_batch(cache: EmbeddingCache, image_branch: bool) -> EncodedImages:
    """The first batch ``nnUNetTrainerSAMCached`` draws from ``cache`` for a plan with or
    without an image branch (its ``_batches``, given what it reads of the trainer)."""
    trainer = SimpleNamespace(
        configuration_manager=configuration(),
        batch_size=4,
        oversample_foreground_percent=0.33,
        sam_plan=plan(fingerprint(), image_branch=image_branch).sam,
    )
    batches = nnUNetTrainerSAMCached._batches(
        trainer, ViewedCaches([cache]), list(cache.cases), 0, None
    )
    return next(batches)["data"]


def test_a_network_with_an_image_branch_caches_its_windows_too(
    branch_network_and_weights, dataset_folder
) -> None:
    cache = build(branch_network_and_weights, dataset_folder)
    assert cache.has_images and cache.info["key_inputs"]["images"] is True
    assert cache.info["image_shape"] == [1, *PATCH]
    assert cache._images.dtype == np.float16
    windows = torch.stack([w[4] for w in expected_windows(dataset_folder)])
    rows = np.arange(WINDOWS)
    # The windows as the network receives them (not resized to its 64 px input).
    assert torch.equal(cache.images(rows), windows.half().float())
    network = branch_network_and_weights[0]
    with torch.no_grad():
        logits = network(windows)
        features = cache.embeddings(rows)
        cached = network(EncodedImages(features, PATCH, images=cache.images(rows)))
        no_image = network.decode(features, PATCH, images=torch.zeros_like(windows))
    # The cached path gives the network's output on the windows, up to float16
    # rounding, the branch's part included.
    scale = logits.abs().max()
    assert (cached - logits).abs().max() / scale < FLOAT16_TOLERANCE
    assert (cached - no_image).abs().max() / scale > FLOAT16_TOLERANCE
    # The cached trainer's batches carry the windows of their rows when the plan asks.
    assert cached_batch(cache, image_branch=False).images is None
    batch = cached_batch(cache, image_branch=True)
    drawn = [
        next(row for row in rows if torch.equal(features[row], window_features))
        for window_features in batch.features
    ]
    assert torch.equal(batch.images, cache.images(drawn))


def test_the_key_names_the_images_and_caches_without_keep_their_names(
    branch_network_and_weights, network_and_weights
) -> None:
    keys = {}
    for name, (network, weights) in (
        ("plain", network_and_weights),
        ("branch", branch_network_and_weights),
    ):
        encoder = network.sam.image_encoder
        keys[name] = cache_key(
            network, encoder, weights, configuration(), None, "float32"
        )
    assert (keys["plain"].images, keys["branch"].images) == (False, True)
    # Named as before the key recorded the images: existing caches are reused.
    inputs = dataclasses.asdict(keys["plain"])
    del inputs["images"]
    assert key_digest(inputs) == keys["plain"].digest()
    with_images = dataclasses.replace(keys["plain"], images=True)
    assert with_images.digest() != keys["plain"].digest()


def test_a_views_images_are_its_augmented_windows(
    branch_network_and_weights, dataset_folder
) -> None:
    view = build(branch_network_and_weights, dataset_folder, view=mirrors())
    for row, window in enumerate(expected_windows(dataset_folder)):
        image, label = window[4].half().float(), torch.from_numpy(window[5]).long()
        augmented_image, augmented_label = (
            view.images([row])[0],
            view.labels([row])[0, 0],
        )
        assert any(
            torch.equal(augmented_label, label.flip(axes))
            and torch.equal(augmented_image, image.flip([axis + 1 for axis in axes]))
            for axes in ((), (0,), (1,), (0, 1))
        )
