"""Pre-trained encoder weights as a new base checkpoint with an identity of its own.

The file holds the whole SAM state at the backbone's native size, so it loads strictly
wherever the original weights do (``--checkpoint PATH``). Beside it,
``WEIGHTS.identity.json`` records its sha256, the sha256 and path of the weights it
continued, and how it was made; ``samnet.models.checkpoint_files`` checks it before
accepting weights whose hash is not the backbone's known one. Fine-tuned checkpoints name
this file's sha256 as their base, so they load only on top of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, Sam

from samnet.core.atomic import atomic_file
from samnet.core.layout import (
    PRETRAIN_FOLDER,
    PRETRAIN_RECORD_FILE,
    PRETRAINED_WEIGHTS_SUFFIX,
    SAM_PLANS,
)
from samnet.core.methods import Method
from samnet.core.paths import results_folder
from samnet.models.backbone_resize import interpolate_pos_embed
from samnet.models.backbone_spec import BackboneSpec
from samnet.models.checkpoint_files import (
    PRETRAINED_FORMAT,
    BaseWeights,
    file_sha256,
    identity_path,
)


def native_state(sam: Sam, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """``sam``'s state as the backbone's weight file has it: a ViT's position embedding
    back on the native patch grid (the model may run at another input size)."""
    state = {
        name: tensor.detach().cpu().clone() for name, tensor in sam.state_dict().items()
    }
    encoder = sam.image_encoder
    if isinstance(encoder, ImageEncoderViT) and encoder.pos_embed is not None:
        grid = spec.native_size // spec.embedding_stride
        state["image_encoder.pos_embed"] = interpolate_pos_embed(
            state["image_encoder.pos_embed"], grid
        )
    return state


def save_pretrained_base(
    sam: Sam, spec: BackboneSpec, path: Path, parent: BaseWeights, record: dict
) -> BaseWeights:
    """Write ``sam`` as a base checkpoint of ``spec`` at ``path``, and its identity beside
    it (both atomically); ``record`` says how it was made. Returns its identity."""
    with atomic_file(path) as handle:
        torch.save(native_state(sam, spec), handle)
    digest = file_sha256(path)
    identity = {
        "format": PRETRAINED_FORMAT,
        "backbone": spec.name,
        "sha256": digest,
        "parent_sha256": parent.sha256,
        "parent_path": parent.path,
        **record,
    }
    with atomic_file(identity_path(path)) as handle:
        handle.write(json.dumps(identity, indent=2).encode())
    return BaseWeights(spec.name, str(path.resolve()), digest)


def pretrained_folder(dataset_name: str) -> Path:
    """Where samnet_pretrain works and leaves its weights for a dataset."""
    return results_folder() / dataset_name / PRETRAIN_FOLDER


def finished_pretrained_bases(dataset_name: str) -> dict[str, Path]:
    """The weights of a finished samnet_pretrain run on the dataset, by backbone name."""
    folder = pretrained_folder(dataset_name)
    if not (folder / PRETRAIN_RECORD_FILE).is_file():
        return {}
    return {
        path.name.removesuffix(PRETRAINED_WEIGHTS_SUFFIX): path
        for path in folder.glob(f"*{PRETRAINED_WEIGHTS_SUFFIX}")
    }


def folds_built_on(dataset_name: str, weights: list[Path]) -> list[Path]:
    """The dataset's SAM fold folders with a checkpoint whose plan names one of ``weights``
    as its base: their models load only on top of those weights."""
    wanted = {path.resolve() for path in weights}
    return [
        fold
        for plans_file in sorted(
            (results_folder() / dataset_name).glob(f"*__{SAM_PLANS}__*/plans.json")
        )
        if _sam_base(plans_file) in wanted
        for fold in sorted(plans_file.parent.glob("fold_*"))
        if any(fold.glob("checkpoint_*.pth"))
    ]


def _sam_base(plans_file: Path) -> Path | None:
    """The base weights the SAM plan nnU-Net copied into a results folder names, if any."""
    configuration = Method.from_folder_name(plans_file.parent.name).configuration
    plans = json.loads(plans_file.read_text())
    sam = plans.get("configurations", {}).get(configuration, {}).get("sam") or {}
    return Path(sam["checkpoint"]).resolve() if sam.get("checkpoint") else None
