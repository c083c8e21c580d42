"""The machine a plan is made for: the hardware half of samnet's fingerprint.

The same dataset gets a different plan on a laptop and on an H100: whether the encoder
can train, how large a batch fits, how many optimizer steps the budget affords.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Hardware:
    """What planning needs to know about the training machine.

    Attributes:
      device: "cuda" or "cpu", where training will run.
      cpu_cores: cores this process may use.
      ram_gb: total main memory.
      gpu_name: the CUDA device's name, None on CPU.
      gpu_memory_gb: its total memory, None on CPU.
      matmul_gflops: measured fp32 matmul rate of ``device`` (the cost model's unit).
    """

    device: str
    cpu_cores: int
    ram_gb: float
    gpu_name: str | None
    gpu_memory_gb: float | None
    matmul_gflops: float

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line, e.g. ``CPU, 2 cores, 24 GB RAM, 250 GFLOP/s``."""
        if self.on_gpu:
            where = f"{self.gpu_name} ({self.gpu_memory_gb:.0f} GB)"
        else:
            where = f"CPU, {self.cpu_cores} cores, {self.ram_gb:.0f} GB RAM"
        return f"{where}, {self.matmul_gflops:.0f} GFLOP/s fp32"


def detect_hardware(device: str = "auto") -> Hardware:
    """The hardware of this machine; ``device`` "auto" picks CUDA when visible."""
    use_gpu = torch.cuda.is_available() and device in ("auto", "cuda")
    properties = torch.cuda.get_device_properties(0) if use_gpu else None
    return Hardware(
        device="cuda" if use_gpu else "cpu",
        cpu_cores=len(os.sched_getaffinity(0)),
        ram_gb=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3,
        gpu_name=properties.name if properties else None,
        gpu_memory_gb=properties.total_memory / 1024**3 if properties else None,
        matmul_gflops=measure_matmul_gflops("cuda" if use_gpu else "cpu"),
    )


def measure_matmul_gflops(device: str, size: int = 1024, repeats: int = 5) -> float:
    """Best fp32 ``size`` x ``size`` matmul rate after a warm-up (about 0.1 s on 2 CPU cores).

    On CPU the time is this process's CPU time divided by torch's thread count, not the
    wall clock: other work on the machine then stretches the wall time but not the rate
    measured, so a plan does not depend on what else happened to run (measured here:
    wall-clock rates of 11-90 GFLOP/s under load against 255 idle).
    """
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    if device == "cuda":
        clock, threads = time.perf_counter, 1
    else:
        clock, threads = time.process_time, torch.get_num_threads()
    best = float("inf")
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = clock()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (clock() - start) / threads)
    return 2 * size**3 / best / 1e9
