"""How near the matmul rate LiteMedSAM's encoder could come on this CPU: its products alone.

    .venv/bin/python benchmarks/encoder_ceiling.py

``encoder_speed.py`` measures the encoder; this asks what bounds it. For 128 and 256 px
and batches of 1 and 8, it records every matrix product and convolution the
FastEncoder's eager graph (BN folded, channels-last, unfused) executes, then replays each
one alone with its own inputs, best of 5 interleaved rounds beside the fp32 matmul rate
(the faster of MKL's and oneDNN's, as in ``encoder_speed.py``). Each linear layer is
replayed twice: as torch runs it (MKL's sgemm) and as one oneDNN call (what the fused
FastEncoder runs); the floor takes the faster of the two. Their summed time is a floor
under the encoder's time: it is what the encoder would take if everything else (softmax,
normalisation, GELU, residual adds, window partitioning) were free and no product ran
slower inside the encoder than alone. The encoder's FLOPs over that floor is the ceiling
of its achieved share of the matmul rate. Reported per kind of product (linear layers, attention's batched products, dense
and depthwise convolutions): FLOPs, time, and rate, so the kind that holds the encoder
back is named.
Writes benchmarks/results/encoder_ceiling_lite_medsam_<cpu|gpu>_<processor>.json.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from encoder_speed import BATCHES, REPEATS, SIZES, matmul_gflops, timed, write_rows
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from samnet.models.backbones import build_sam
from samnet.models.fast_encoder import FastEncoder

# As seen under inference mode, which skips the decomposition of linear and conv2d.
PRODUCTS = {
    torch.ops.aten.linear.default: "linear",
    torch.ops.aten.bmm.default: "attention",
    torch.ops.aten.baddbmm.default: "attention",
    torch.ops.aten.conv2d.default: "convolution",
}


@dataclass
class Product:
    """One recorded call: ``operator(*arguments)``, its kind and FLOPs."""

    operator: torch._ops.OpOverload
    arguments: tuple
    kind: str
    flops: int

    def __call__(self) -> torch.Tensor:
        return self.operator(*self.arguments)

    def on_onednn(self) -> Product:
        """The same linear layer as one oneDNN call: ``fused_linears``' op, registered
        when ``fast_encoder`` is imported."""
        x, weight, *bias = self.arguments
        bias = (
            bias[0] if bias and bias[0] is not None else weight.new_zeros(len(weight))
        )
        operator = torch.ops.samnet.linear_pointwise.default
        return Product(
            operator, (x, weight, bias, "none"), "linear on oneDNN", self.flops
        )


class RecordProducts(TorchDispatchMode):
    """Keeps a copy of the inputs of every matrix product and convolution that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.products: list[Product] = []

    def __torch_dispatch__(self, operator, types, arguments=(), kwargs=None):
        kind = PRODUCTS.get(operator)
        if kind is not None:
            assert not kwargs, f"{operator} called with keywords {kwargs}"
            copies = tuple(
                a.detach().clone() if isinstance(a, torch.Tensor) else a
                for a in arguments
            )
            if kind == "convolution" and len(copies) > 6 and copies[6] > 1:
                kind = "depthwise convolution"
            self.products.append(Product(operator, copies, kind, 0))
        return operator(*arguments, **(kwargs or {}))


def recorded_products(encoder: FastEncoder, x: torch.Tensor) -> list[Product]:
    """Every product ``encoder(x)`` executes, with the FLOPs torch counts for it."""
    with torch.inference_mode(), RecordProducts() as recorder:
        encoder(x)
    for product in recorder.products:
        # Outside inference mode, so the counter sees the products linear and conv2d
        # decompose into.
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            product()
        product.flops = counter.get_total_flops()
    return recorder.products


def measure(
    encoder: FastEncoder, products: list[Product], x: torch.Tensor
) -> tuple[float, list[float], float]:
    """Best encoder seconds, best seconds per product, best matmul rate (the faster
    library's); interleaved."""
    encoder(x)
    for product in products:
        product()
    encoder_best, matmul_best = float("inf"), 0.0
    product_best = [float("inf")] * len(products)
    for _ in range(REPEATS):
        matmul_best = max(matmul_best, matmul_gflops(repeats=3)["best"])
        encoder_best = min(encoder_best, timed(lambda: encoder(x)))
        with torch.inference_mode():
            for index, product in enumerate(products):
                product_best[index] = min(product_best[index], timed(product))
    return encoder_best, product_best, matmul_best


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for size in SIZES:
        sam, _ = build_sam("lite_medsam", image_size=size)
        encoder = FastEncoder(
            sam.image_encoder.eval(), compile=False, fuse_convolutions=False
        )
        for batch in BATCHES:
            x = torch.rand(batch, 3, size, size)
            recorded = recorded_products(encoder, x)
            on_onednn = [p.on_onednn() for p in recorded if p.kind == "linear"]
            products = recorded + on_onednn
            seconds, product_seconds, matmul = measure(encoder, products, x)
            flops = sum(p.flops for p in recorded)
            kinds = defaultdict(lambda: {"gflop": 0.0, "seconds": 0.0, "calls": 0})
            for product, spent in zip(products, product_seconds, strict=True):
                kinds[product.kind]["gflop"] += product.flops / 1e9
                kinds[product.kind]["seconds"] += spent
                kinds[product.kind]["calls"] += 1
            for kind in kinds.values():
                kind["fraction_of_matmul_rate"] = (
                    kind["gflop"] / kind["seconds"] / matmul
                )
            as_run = sum(product_seconds[: len(recorded)])
            # The floor takes the linear layers on the faster of the two libraries.
            linear = kinds["linear"]["seconds"]
            floor = as_run - linear + min(linear, kinds["linear on oneDNN"]["seconds"])
            row = {
                "size": size,
                "batch": batch,
                "matmul_gflops_fp32": matmul,
                "gflop": flops / 1e9,
                "encoder_eager_seconds": seconds,
                "encoder_eager_fraction_of_matmul_rate": flops / seconds / 1e9 / matmul,
                "products_as_run_seconds": as_run,
                "share_of_eager_time_outside_products": 1 - as_run / seconds,
                "products_alone_seconds": floor,
                "ceiling_fraction_of_matmul_rate": flops / floor / 1e9 / matmul,
                "kinds": dict(kinds),
            }
            rows.append(row)
            print(
                f"{size:4d} px batch {batch}: eager {seconds / batch:.3f} s/slice "
                f"({row['encoder_eager_fraction_of_matmul_rate']:.1%}), products alone "
                f"{floor / batch:.3f} s/slice: ceiling {row['ceiling_fraction_of_matmul_rate']:.1%}"
                f" of {matmul:.0f} GFLOP/s"
            )
            for name, kind in sorted(kinds.items()):
                print(
                    f"    {name:22s} {kind['gflop']:7.2f} GFLOP {kind['seconds']:7.3f} s "
                    f"{kind['fraction_of_matmul_rate']:6.1%} of matmul rate"
                )
    write_rows("encoder_ceiling", rows)


if __name__ == "__main__":
    main()
