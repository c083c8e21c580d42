"""LiteMedSAM zero-shot on the real chest X-rays, one ground-truth box per lung.

    .venv/bin/python benchmarks/zero_shot_cxr.py

Writes the Dice of every lung and their mean to benchmarks/results/zero_shot_cxr_<cpu|gpu>.json.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import SHARED_DATA, machine, write_result
from PIL import Image
from tqdm import tqdm

from samnet.models.network import build_network
from samnet.prompting.simulated import binary_dice, box_from_mask

LUNGS = {1: "right_lung", 2: "left_lung"}


def main() -> None:
    folder = SHARED_DATA / "CXR_Lungs"
    network, base = build_network("lite_medsam", in_channels=1, num_classes=2)
    network.eval()
    per_lung = []
    start = time.perf_counter()
    for path in tqdm(sorted((folder / "images").glob("*.png")), unit="image"):
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        labels = np.asarray(Image.open(folder / "labels" / path.name))
        x = torch.from_numpy((image - image.mean()) / image.std())[None, None]
        present = [value for value in LUNGS if (labels == value).any()]
        boxes = torch.tensor([box_from_mask(labels == value) for value in present])
        with torch.inference_mode():
            masks = network.forward_prompted(x, boxes=boxes)[:, 0].numpy() > 0
        for value, mask in zip(present, masks):
            score = binary_dice(labels == value, mask)
            per_lung.append({"image": path.name, "lung": LUNGS[value], "dice": score})
    seconds = time.perf_counter() - start
    scores = [entry["dice"] for entry in per_lung]
    result = {
        "benchmark": "zero_shot_cxr",
        "machine": machine(),
        "model": "lite_medsam (bundled weights), SAM prompted path, one tight ground-truth box per lung",
        "base_weights_sha256": base.sha256,
        "input": "z-scored image (as nnU-Net gives it), percentile min-max to [0,1], stretched to 256x256",
        "lungs": len(scores),
        "dice_mean": float(np.mean(scores)),
        "dice_median": float(np.median(scores)),
        "dice_sd": float(np.std(scores, ddof=1)),
        "seconds_per_image": seconds / len({entry["image"] for entry in per_lung}),
        "per_lung": per_lung,
    }
    write_result(f"zero_shot_cxr_{result['machine']['kind'].lower()}", result)
    print(f"mean Dice {result['dice_mean']:.4f} over {result['lungs']} lungs")


if __name__ == "__main__":
    main()
