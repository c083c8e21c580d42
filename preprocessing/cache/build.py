"""Build the embedding cache (layout: ``samnet.preprocessing.cache.embedding_cache``).

A build reads nnU-Net's preprocessed cases with nnU-Net's own dataset class, cuts every
slice into the predictor's sliding windows, encodes them in batches under
``torch.inference_mode`` (and float16 autocast on CUDA, ``samnet.core.precision``; the
features are stored as float16 either way) and writes into a temporary sibling folder
that is renamed into place only when complete. An existing complete cache with the same key is reused while
the preprocessed data it was built from is unchanged (``data_sha256``: fixed labels
re-preprocessed, cases added or removed make it rebuilt in place); what killed builds
left behind is removed first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.sliding_window_prediction import (
    compute_steps_for_sliding_window,
)
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from torch import nn
from tqdm import tqdm

from samnet.core.atomic import atomic_folder
from samnet.core.errors import SamnetError
from samnet.core.layout import CACHE_FOLDER, CACHE_INFO_FILE
from samnet.core.locks import hold
from samnet.core.precision import precision_for
from samnet.models.checkpoint_files import BaseWeights
from samnet.models.encoder_prefix import split_image_encoder
from samnet.models.fast_encoder import FastEncoder
from samnet.models.network import SamSegmentationNetwork
from samnet.preprocessing.cache.embedding_cache import (
    INDEX_COLUMNS,
    OUTSIDE_LABEL,
    TILE_STEP_SIZE,
    CacheKey,
    EmbeddingCache,
)
from samnet.preprocessing.cache.views import CacheView

# How nnU-Net's dataset classes store a preprocessed case's images and labels
# (nnUNetDatasetBlosc2: .b2nd; nnUNetDatasetNumpy: .npz). The .npy files nnU-Net unpacks
# from .npz are copies made for speed, and the .pkl properties do not enter the cache.
DATA_SUFFIXES = (".b2nd", ".npz")


def data_sha256(data_folder: Path) -> str:
    """Hash of the names and bytes of the preprocessed images and labels in ``data_folder``.

    The stored (compressed) bytes, hashed at about 0.9 GB/s with SHA-NI: 0.05 s for
    Hippocampus' 2d data (35 MB), about a minute per 50 GB.
    """
    files = sorted(
        p
        for p in (data_folder.iterdir() if data_folder.is_dir() else ())
        if p.suffix in DATA_SUFFIXES
    )
    if not files:
        raise SamnetError(
            data_folder,
            f"holds no preprocessed cases (no {' or '.join(DATA_SUFFIXES)} files)",
            "run nnU-Net's preprocessing for this configuration first",
        )
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            file_hash = hashlib.file_digest(handle, "sha256").hexdigest()
        digest.update(f"{path.name}\0{file_hash}\n".encode())
    return digest.hexdigest()


def module_sha256(modules: Iterable[nn.Module]) -> str:
    """Hash of the names and values of every tensor in the modules' state dicts."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def window_positions(
    image_size: Sequence[int], patch_size: Sequence[int]
) -> list[tuple[int, int]]:
    """``(y0, x0)`` of nnU-Net's sliding windows on one slice of ``image_size`` (H, W).

    The slice is first padded to at least ``patch_size``, as nnU-Net's predictor does.
    """
    padded = [max(size, patch) for size, patch in zip(image_size, patch_size)]
    steps = compute_steps_for_sliding_window(padded, patch_size, TILE_STEP_SIZE)
    return list(itertools.product(*steps))


def slice_windows(
    image: np.ndarray, label: np.ndarray, patch_size: Sequence[int]
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(y0, x0, image window C x ph x pw, label window ph x pw)`` of one slice.

    ``image`` ``C x H x W`` is padded with 0 (the predictor's padding), ``label``
    ``H x W`` with ``OUTSIDE_LABEL``.
    """
    padded_image = pad_nd_image(image, patch_size, "constant", {"constant_values": 0})
    padded_label = pad_nd_image(
        label, patch_size, "constant", {"constant_values": OUTSIDE_LABEL}
    )
    height, width = patch_size
    for y0, x0 in window_positions(image.shape[1:], patch_size):
        window = (slice(y0, y0 + height), slice(x0, x0 + width))
        yield y0, x0, padded_image[(slice(None), *window)], padded_label[window]


def build_embedding_cache(
    network: SamSegmentationNetwork,
    base_weights: BaseWeights,
    configuration: ConfigurationManager,
    preprocessed_dataset_folder: str | Path,
    prefix_stages: int | None = None,
    fast: bool = False,
    batch_size: int = 8,
    view: CacheView | None = None,
) -> EmbeddingCache:
    """The cache of ``network``'s frozen encoder on a 2d configuration: reused, or built.

    Arguments:
      network: its input adapter and (frozen part of the) image encoder compute the cache;
        with an image branch, the cache also stores the windows it reads.
      base_weights: identity of the weights the network was built from.
      configuration: the nnU-Net 2d configuration whose preprocessed cases are cached.
      preprocessed_dataset_folder: ``nnUNet_preprocessed/<Dataset>``.
      prefix_stages: None caches the image embeddings; k caches the output of the
        encoder's first k stages (``split_image_encoder``).
      fast: encode with an eager ``FastEncoder`` copy. ``torch.compile`` would cost one
        to two minutes on 2 CPU cores and save nothing: compiled and eager are within 5%
        of each other at 128 and 256 px (benchmarks/results/encoder_speed_*_amd-epyc.json).
      batch_size: windows per encoder call.
      view: an augmented view (``CacheView``): every window and its label augmented
        before encoding, cached as a cache of its own; None: the windows as they are.

    Raises:
      SamnetError: the existing cache's ``cache.json`` does not match its folder or its
        arrays; or the configuration is not preprocessed.
    """
    encoder = network.sam.image_encoder
    if prefix_stages is not None:
        encoder, _ = split_image_encoder(encoder, prefix_stages)
    device = next(network.parameters()).device
    precision = precision_for(device)
    key = cache_key(
        network,
        encoder,
        base_weights,
        configuration,
        prefix_stages,
        precision.compute_dtype,
        view,
    )
    dataset_folder = Path(preprocessed_dataset_folder)
    data_folder = dataset_folder / configuration.data_identifier
    target = dataset_folder / CACHE_FOLDER / key.digest()
    target.parent.mkdir(parents=True, exist_ok=True)
    data_hash = data_sha256(data_folder)
    # Trainers of several folds started together build a cache once; the others wait.
    with hold(
        target.parent / f".{target.name}.lock",
        f"building the embedding cache {target.name}",
        wait=None,
        fix="wait for that run to finish the build, or stop it",
    ):
        if not _is_current(target, data_hash):
            _remove_leftovers(target)
            frozen = FastEncoder(encoder, compile=False) if fast else encoder

            def encode(batch: torch.Tensor) -> torch.Tensor:
                with precision.autocast():
                    return frozen(network.input_adapter(batch.to(device)))

            with atomic_folder(target) as temporary, _eval_mode(network):
                _write_cache(
                    temporary, encode, key, data_folder, data_hash, batch_size, view
                )
        return EmbeddingCache(target)


def _is_current(target: Path, data_hash: str) -> bool:
    """``target`` is complete and was built from the preprocessed data hashing to
    ``data_hash`` (a cache without the hash predates it and is rebuilt)."""
    info_file = target / CACHE_INFO_FILE
    if not info_file.exists():
        return False
    try:
        built_from = json.loads(info_file.read_text()).get("data_sha256")
    except (OSError, ValueError, AttributeError):
        # Unreadable: EmbeddingCache names the problem and the fix.
        return True
    return built_from == data_hash


def cache_key(
    network: SamSegmentationNetwork,
    frozen_encoder: nn.Module,
    base_weights: BaseWeights,
    configuration: ConfigurationManager,
    prefix_stages: int | None,
    compute_dtype: str,
    view: CacheView | None = None,
) -> CacheKey:
    """The key of the cache that ``network``'s adapter and ``frozen_encoder`` compute in
    ``compute_dtype`` (of ``view``'s augmented windows, when given), with the windows
    themselves when ``network`` has an image branch."""
    adapter = network.input_adapter
    return CacheKey(
        backbone=base_weights.backbone,
        weights_sha256=base_weights.sha256,
        frozen_sha256=module_sha256([adapter, frozen_encoder]),
        input_size=adapter.image_size,
        intensity_mapping=adapter.normalization,
        in_channels=adapter.in_channels,
        data_identifier=configuration.data_identifier,
        patch_size=tuple(configuration.patch_size),
        spacing=tuple(configuration.spacing),
        normalization_schemes=tuple(configuration.normalization_schemes),
        use_mask_for_norm=tuple(configuration.use_mask_for_norm),
        prefix_stages=prefix_stages,
        view=0 if view is None else view.number,
        augmentation=None if view is None else view.augmentation,
        compute_dtype=compute_dtype,
        images=network.image_branch is not None,
    )


def _write_cache(
    folder: Path,
    encode: Callable[[torch.Tensor], torch.Tensor],
    key: CacheKey,
    data_folder: Path,
    data_hash: str,
    batch_size: int,
    view: CacheView | None,
) -> None:
    """Fill ``folder`` with the arrays and, last, ``cache.json`` (see the module docstring);
    each window through ``view`` first, when given."""
    started = time.perf_counter()
    # nnU-Net's dataset, of its own class for the folder's file format.
    dataset = infer_dataset_class(str(data_folder))(str(data_folder))
    patch_size = key.patch_size
    shapes = [dataset.load_case(case)[0].shape for case in dataset.identifiers]
    windows = sum(s[1] * len(window_positions(s[2:], patch_size)) for s in shapes)
    index = np.lib.format.open_memmap(
        folder / "index.npy", "w+", np.int32, (windows, len(INDEX_COLUMNS))
    )
    labels = np.lib.format.open_memmap(
        folder / "labels.npy", "w+", np.int16, (windows, *patch_size)
    )
    image_shape = [shapes[0][0], *patch_size]
    images = (
        np.lib.format.open_memmap(
            folder / "images.npy", "w+", np.float16, (windows, *image_shape)
        )
        if key.images
        else None
    )
    writer = _FeatureWriter(encode, folder / "features.npy", windows, batch_size)
    row = 0
    for number, case in enumerate(tqdm(dataset.identifiers, desc="embedding cache")):
        data, seg, _, _ = dataset.load_case(case)
        for z in range(data.shape[1]):
            image, label = np.asarray(data[:, z]), np.asarray(seg[0, z])
            for y0, x0, window, window_label in slice_windows(image, label, patch_size):
                if view is not None:
                    window, window_label = view(window, window_label, row)
                index[row] = number, z, y0, x0, np.count_nonzero(window_label > 0)
                labels[row] = window_label
                if images is not None:
                    images[row] = _float16_window(window, case, z)
                writer.add(window)
                row += 1
    feature_shape = writer.close()
    for array in (index, labels, images):
        if array is not None:
            array.flush()
    info = {
        "key_inputs": dataclasses.asdict(key),
        "windows": windows,
        "feature_shape": feature_shape,
        "feature_dtype": "float16",
        "label_dtype": "int16",
        "outside_label": OUTSIDE_LABEL,
        "tile_step_size": TILE_STEP_SIZE,
        "index_columns": INDEX_COLUMNS,
        "cases": dataset.identifiers,
        "data_sha256": data_hash,
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    if images is not None:
        info.update(image_shape=image_shape, image_dtype="float16")
    (folder / CACHE_INFO_FILE).write_text(json.dumps(info, indent=1))


def _float16_window(window: np.ndarray, case: str, z: int) -> np.ndarray:
    """``window`` as float16 for ``images.npy``; an error where float16 cannot hold it."""
    stored = window.astype(np.float16)
    if not np.isfinite(stored).all():
        raise SamnetError(
            None,
            f"case {case} slice {z} holds values float16 cannot store (beyond 65504): "
            "its channels are not normalised, so the image branch's cache cannot hold it",
            "normalise the channels (dataset.json channel_names), or plan without "
            "--image-branch",
        )
    return stored


class _FeatureWriter:
    """Encodes windows in batches and writes the features, in row order, to a ``.npy``."""

    def __init__(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        path: Path,
        windows: int,
        batch_size: int,
    ) -> None:
        self.encode, self.path = encode, path
        self.windows, self.batch_size = windows, batch_size
        self.pending: list[np.ndarray] = []
        self.features: np.memmap | None = None
        self.row = 0

    def add(self, window: np.ndarray) -> None:
        """Queue one ``C x H x W`` window; encodes when a batch is full."""
        self.pending.append(window)
        if len(self.pending) == self.batch_size:
            self._encode_pending()

    def close(self) -> list[int]:
        """Encode what is queued, flush; the shape of one window's features."""
        if self.pending:
            self._encode_pending()
        self.features.flush()
        return list(self.features.shape[1:])

    def _encode_pending(self) -> None:
        count = len(self.pending)
        batch = np.zeros((self.batch_size, *self.pending[0].shape), np.float32)
        # A short last batch is zero-filled: a compiled encoder then sees one shape only.
        batch[:count] = self.pending
        with torch.inference_mode():
            features = self.encode(torch.from_numpy(batch))[:count]
        stored = features.to("cpu", torch.float16)
        if not torch.isfinite(stored).all():
            raise SamnetError(
                None,
                f"the frozen encoder's output for windows {self.row} to "
                f"{self.row + count - 1} is not finite in float16 (NaN, or beyond "
                "float16's range of 65504), so it cannot be cached",
                "plan without the embedding cache: samnet_plan --encoder-mode trained",
            )
        if self.features is None:
            self.features = np.lib.format.open_memmap(
                self.path, "w+", np.float16, (self.windows, *stored.shape[1:])
            )
        self.features[self.row : self.row + count] = stored.numpy()
        self.row += count
        self.pending = []


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode (BatchNorm on running statistics); each mode restored after."""
    modes = {submodule: submodule.training for submodule in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes.items():
            submodule.training = training


def _remove_leftovers(target: Path) -> None:
    """Remove what killed builds left, ``atomic_folder``'s temporary siblings of ``target``,
    and ``target`` itself: incomplete (no ``cache.json``) or built from other data."""
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
    if target.exists():
        shutil.rmtree(target)
