"""Linear warm-up, then cosine or polynomial decay: the SAM trainers' learning rate."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

# nnU-Net's PolyLRScheduler exponent.
POLY_EXPONENT = 0.9


def warmup_decay_factor(
    step: int, max_steps: int, warmup_steps: int, schedule: str
) -> float:
    """Multiplier of the initial rate at ``step`` (0-based) of ``max_steps``.

    Warm-up rises linearly over ``warmup_steps`` (never starting at 0, so step 0 trains);
    the decay then falls from 1 towards 0 at ``max_steps``.
    """
    if schedule not in ("cosine", "poly"):
        raise ValueError(f"schedule must be 'cosine' or 'poly', got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return (1.0 - progress) ** POLY_EXPONENT


class WarmupDecayLR(LRScheduler):
    """Sets every group's rate for an explicit step, as nnU-Net's trainer calls it.

    nnU-Net calls ``step(current_epoch)`` at the start of each epoch, so a step is an
    epoch; ``step()`` without an argument advances by one.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        initial_lr: float,
        max_steps: int,
        warmup_fraction: float,
        schedule: str,
    ) -> None:
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.warmup_steps = math.ceil(warmup_fraction * max_steps)
        self.schedule = schedule
        self.ctr = 0
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = warmup_decay_factor(
            self.last_epoch, self.max_steps, self.warmup_steps, self.schedule
        )
        return [self.initial_lr * factor for _ in self.optimizer.param_groups]

    def step(self, current_step: int | None = None) -> None:
        if current_step is None:
            current_step = self.ctr
            self.ctr += 1
        self.last_epoch = current_step
        rates = self.get_lr()
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        self._last_lr = rates
