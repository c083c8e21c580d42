"""What gradient checkpointing saves of a trained SAM encoder's memory: the activations
one slice keeps for the backward pass, with and without it, for every backbone.

    .venv/bin/python benchmarks/checkpointing_memory.py [--backbones lite_medsam sam_vit_b]

Each backbone is built at its native size with random weights and PEFT as the planner
trains its encoder (LoRA in encoder and decoder, or every weight: ``--peft full``), then
one slice runs through the input adapter and the encoder in training mode. Every tensor
autograd saves for the backward pass is counted once (by storage; weights excluded),
attributed to the block that saved it or to the rest of the encoder (patch embedding,
merging, neck). Without checkpointing all of it is kept; with it
(``samnet.models.gradient_checkpointing``) the rest, each block's input, and, in the
backward pass, one block's recomputed activations at a time: the peak is the rest plus the
block inputs plus the largest block. Their ratio is the cost model's
``CHECKPOINTED_MEMORY_FACTOR``, and fully trained over LoRA its
``FULLY_TRAINED_MEMORY_FACTOR``.

Counted bytes do not depend on the device, and a slice's activations scale with the batch,
so the ratio holds on a GPU (under AMP every activation halves); what the allocator adds
there is for ``benchmarks/gpu_smoke.py`` to measure. A ViT's blocks are alike within a
kind (windowed, global attention): one of each runs, and the others are counted as their
kind's (a ViT-H at 1024 px would keep about 18 GB otherwise).

Writes ``benchmarks/results/checkpointing_memory_cpu.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import Callable

import torch
from common import machine, write_result
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from samnet.models.backbones import BACKBONES
from samnet.models.gradient_checkpointing import encoder_blocks
from samnet.models.network import build_network
from samnet.models.peft import PeftConfig, apply_peft
from samnet.planners.cost_model import (
    AMP_MEMORY_FACTOR,
    CHECKPOINTED_MEMORY_FACTOR,
    FULLY_TRAINED_MEMORY_FACTOR,
    step_cost,
)
from samnet.planners.hardware import Hardware

MB = 2**20
PEFT = {
    "lora": PeftConfig(
        method="lora",
        parts=("encoder", "decoder"),
        lora_rank=4,
        lora_alpha=4.0,
        lora_targets=("encoder_attention", "decoder_attention"),
        trainable_extra=("class_head", "input_adapter"),
    ),
    "full": PeftConfig(
        method="full",
        parts=("encoder", "decoder"),
        trainable_extra=("class_head", "input_adapter"),
    ),
}
# Any CPU record: the cost model's CPU memory is fp32, as counted here.
CPU = Hardware("cpu", 2, 24.0, None, None, 250.0)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    return parser.parse_args()


def saved_bytes(
    encoder: nn.Module, run: Callable[[], torch.Tensor], weights: set[int]
) -> tuple[int, list[int], list[int]]:
    """Bytes autograd saves in ``run()`` outside the blocks, in each block, and each
    block's input, for ``encoder_blocks(encoder)``."""
    blocks = encoder_blocks(encoder)
    seen: dict[int, tuple[int | None, int]] = {}
    current: list[int | None] = [None]
    inputs = [0] * len(blocks)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen.setdefault(storage.data_ptr(), (current[0], storage.nbytes()))
        return tensor

    def entering(index: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            current[0] = index
            inputs[index] = args[0].untyped_storage().nbytes()

        return hook

    def leaving(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        current[0] = None

    handles = [b.register_forward_pre_hook(entering(i)) for i, b in enumerate(blocks)]
    handles += [b.register_forward_hook(leaving) for b in blocks]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    for handle in handles:
        handle.remove()
    per_block = [0] * len(blocks)
    for block, size in seen.values():
        if block is not None:
            per_block[block] += size
    rest = sum(size for block, size in seen.values() if block is None)
    return rest, per_block, inputs


def measure(backbone: str, peft: str) -> dict:
    """One slice at the backbone's native size: kept activations, plain and checkpointed."""
    torch.manual_seed(0)
    spec = BACKBONES[backbone]
    network, _ = build_network(backbone, 1, 2, pretrained=False)
    encoder = network.sam.image_encoder
    kinds = None
    if isinstance(encoder, ImageEncoderViT):
        # One windowed block, then the first global-attention one.
        kinds = [block.window_size == 0 for block in encoder.blocks]
        encoder.blocks = nn.ModuleList(
            [encoder.blocks[kinds.index(False)], encoder.blocks[kinds.index(True)]]
        )
    apply_peft(network, PEFT[peft]).train()
    weights = {p.untyped_storage().data_ptr() for p in network.parameters()}
    image = torch.randn(1, 1, spec.native_size, spec.native_size)
    rest, per_block, inputs = saved_bytes(
        encoder, lambda: encoder(network.input_adapter(image)), weights
    )
    if kinds is not None:  # every block as the measured one of its kind
        per_block = [
            per_block[-1] if is_global else per_block[0] for is_global in kinds
        ]
        inputs = [inputs[0]] * len(kinds)
    plain = rest + sum(per_block)
    checkpointed = rest + sum(inputs) + max(per_block)
    modelled = step_cost(spec, spec.native_size, "trained", CPU).memory_mb_per_slice
    return {
        "backbone": backbone,
        "input_size": spec.native_size,
        "peft": peft,
        "blocks": len(per_block),
        "plain_mb": round(plain / MB, 1),
        "rest_mb": round(rest / MB, 1),
        "block_inputs_mb": round(sum(inputs) / MB, 1),
        "largest_block_mb": round(max(per_block) / MB, 1),
        "checkpointed_mb": round(checkpointed / MB, 1),
        "factor": round(checkpointed / plain, 3),
        "cost_model_fp32_mb": round(modelled, 1),
    }


def main() -> None:
    args = arguments()
    rows = []
    # Each in a process of its own, which returns its memory when done: one process
    # measuring them all grew past 20 GB (ViT-H at 1024 px alone peaks near 9 GB).
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1, maxtasksperchild=1) as pool:
        for backbone in args.backbones:
            for peft in PEFT:
                rows.append(pool.apply(measure, (backbone, peft)))
                print(rows[-1], flush=True)
    # What training every encoder weight keeps over what LoRA keeps.
    plain = {(row["backbone"], row["peft"]): row["plain_mb"] for row in rows}
    full_over_lora = {
        backbone: round(plain[backbone, "full"] / plain[backbone, "lora"], 2)
        for backbone in args.backbones
    }
    write_result(
        "checkpointing_memory_cpu",
        {
            "machine": machine(),
            "what": "activation bytes one slice keeps for the backward pass through the "
            "trained encoder (fp32; weights excluded), without and with gradient "
            "checkpointing of every block",
            "cost_model": {
                "CHECKPOINTED_MEMORY_FACTOR": CHECKPOINTED_MEMORY_FACTOR,
                "FULLY_TRAINED_MEMORY_FACTOR": FULLY_TRAINED_MEMORY_FACTOR,
                "AMP_MEMORY_FACTOR": AMP_MEMORY_FACTOR,
            },
            "largest_factor": max(row["factor"] for row in rows),
            "full_over_lora": full_over_lora,
            "largest_full_over_lora": max(full_over_lora.values()),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
