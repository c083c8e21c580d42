"""LiteMedSAM's real weights through samnet's network, on the real chest X-rays."""

from __future__ import annotations

import numpy as np
import torch
from helpers import shared_dataset
from PIL import Image

from samnet.models.network import build_network
from samnet.prompting.simulated import binary_dice, box_from_mask

IMAGES = 20  # two lungs each


def test_lite_medsam_with_ground_truth_boxes_segments_lungs() -> None:
    folder = shared_dataset("CXR_Lungs")
    network, _ = build_network("lite_medsam", in_channels=1, num_classes=2)
    network.eval()
    scores = []
    for path in sorted((folder / "images").glob("*.png"))[:IMAGES]:
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        labels = np.asarray(Image.open(folder / "labels" / path.name))
        lungs = [labels == value for value in (1, 2)]
        # nnU-Net's z-score normalisation, what the network receives in training.
        x = torch.from_numpy((image - image.mean()) / image.std())[None, None]
        boxes = torch.tensor(
            [box_from_mask(lung) for lung in lungs], dtype=torch.float32
        )
        with torch.inference_mode():
            masks = network.forward_prompted(x, boxes=boxes)[:, 0] > 0
        scores += [binary_dice(lung, mask.numpy()) for lung, mask in zip(lungs, masks)]
    assert len(scores) == 2 * IMAGES
    assert np.mean(scores) >= 0.80, (
        f"mean Dice {np.mean(scores):.3f} over {len(scores)} lungs"
    )
