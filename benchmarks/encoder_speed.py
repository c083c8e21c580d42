"""LiteMedSAM encoder speed on this machine, beside its fp32 matmul rate.

    .venv/bin/python benchmarks/encoder_speed.py [--backbone lite_medsam]

For 128 and 256 px inputs and batches of 1 and 8, times the encoder as built (eval,
no_grad) and samnet's FastEncoder (BN folding, convolutions fused with their GELU,
channels-last, inference mode; eager, compiled, and compiled without the fusion), as
seconds per slice and achieved GFLOP/s (FLOPs counted by
torch's FlopCounterMode), and checks that outputs agree within 1e-4 relative.
Writes benchmarks/results/encoder_speed_<backbone>_<cpu|gpu>.json.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine, write_result
from torch.utils.flop_counter import FlopCounterMode

from samnet.models.backbones import build_sam
from samnet.models.fast_encoder import FastEncoder

SIZES = (128, 256)
BATCHES = (1, 8)
REPEATS = 5


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 n x n matmul rate over ``repeats``, after warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def encoder_flops(encoder: torch.nn.Module, size: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.rand(1, 3, size, size))
    return counter.get_total_flops()


def measure(run, x: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """Best seconds per slice over REPEATS after one warm-up call (which compiles), the
    matmul rate measured right before (the host's speed drifts between minutes), and the output.
    """
    output = run(x)
    matmul = matmul_gflops()
    return min(timed(lambda: run(x)) for _ in range(REPEATS)) / len(x), matmul, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lite_medsam")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"fp32 matmul: {matmul_gflops():.1f} GFLOP/s on {torch.get_num_threads()} threads"
    )
    rows = []
    for size in SIZES:
        sam, _ = build_sam(args.backbone, image_size=size)
        encoder = sam.image_encoder.eval()
        flops = encoder_flops(encoder, size)

        variants = {
            "as built (eval, no_grad)": torch.no_grad()(encoder),
            "FastEncoder eager": FastEncoder(encoder, compile=False),
            "FastEncoder compiled": FastEncoder(encoder, compile=True),
            "FastEncoder compiled, unfused convolutions": FastEncoder(
                encoder, compile=True, fuse_convolutions=False
            ),
        }
        for batch in BATCHES:
            x = torch.rand(batch, 3, size, size)
            reference = None
            for name, run in variants.items():
                seconds, matmul, output = measure(run, x)
                reference = output if reference is None else reference
                error = (
                    (output - reference).abs().max() / reference.abs().max()
                ).item()
                achieved = flops / seconds / 1e9
                row = {
                    "size": size,
                    "batch": batch,
                    "variant": name,
                    "seconds_per_slice": seconds,
                    "gflop_per_slice": flops / 1e9,
                    "achieved_gflops": achieved,
                    "matmul_gflops_fp32": matmul,
                    "fraction_of_matmul_rate": achieved / matmul,
                    "max_relative_difference_to_as_built": error,
                }
                rows.append(row)
                print(
                    f"{size:4d} px  batch {batch}  {name:42s} {seconds:7.3f} s/slice  "
                    f"{achieved:6.1f} GFLOP/s  {achieved / matmul:5.1%} of matmul  rel.diff {error:.1e}"
                )
    write_result(
        f"encoder_speed_{args.backbone}_{machine()['kind'].lower()}",
        {
            "benchmark": "encoder_speed",
            "backbone": args.backbone,
            "machine": machine(),
            "threads": torch.get_num_threads(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
