"""Floating-point settings for running SAM on a CPU."""

from __future__ import annotations

import torch


def flush_denormals() -> None:
    """Compute denormal floats (below ~1.2e-38 in fp32) as zero on this CPU.

    As fine-tuning saturates the decoder's logits, softmax and its gradients fill with
    denormals, which x86 CPUs compute on a slow path: the few-shot trainer's Hippocampus
    epochs grew from 64 s to 260 s; with every thread flushed they stay at 60-66 s.
    Values that small change no segmentation; GPUs are not affected.

    The setting belongs to a thread, and torch's worker threads copy it when they start:
    call this before the process's first parallel torch operation (``configure_environment``
    does, at the start of every samnet command); later calls reach the calling thread only.
    """
    torch.set_flush_denormal(True)
