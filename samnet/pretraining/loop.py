"""The pre-training loop: AdamW with warm-up and cosine decay, resumable, with progress.

On CUDA each step runs under float16 autocast with loss scaling (``samnet.core.precision``,
as nnU-Net's trainer does); on CPU in float32, the scaler a pass-through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import trange

from samnet.core.atomic import atomic_file
from samnet.core.precision import precision_for
from samnet.models.lr_schedule import warmup_decay_factor
from samnet.pretraining.masked_image_model import MaskedImageModel


@dataclass(frozen=True)
class PretrainBudget:
    """Optimizer steps of ``batch_size`` slices; the state is saved every ``save_every``."""

    steps: int
    batch_size: int
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    save_every: int = 25


def pretrain(
    model: MaskedImageModel,
    batches: Callable[[int], Iterator[torch.Tensor]],
    budget: PretrainBudget,
    state_file: Path,
    device: torch.device,
) -> list[float]:
    """Train ``model`` for ``budget.steps``, resuming from ``state_file`` where it exists.

    Arguments:
      batches: seed -> endless image batches; called with the step to start from, so a
        resumed run draws new batches rather than the first ones again.

    Returns the loss of every step, the resumed ones included.
    """
    model.to(device).train()
    precision = precision_for(device)
    scaler = precision.grad_scaler()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=budget.learning_rate, weight_decay=budget.weight_decay
    )
    warmup = math.ceil(budget.warmup_fraction * budget.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_decay_factor(step, budget.steps, warmup, "cosine"),
    )
    losses: list[float] = []
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        losses = list(state["losses"])
        # Empty where the run so far had no loss scaling (on CPU, or before AMP).
        if state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
    stream = batches(len(losses))
    steps = trange(len(losses), budget.steps, desc="pre-training", unit="step")
    for step in steps:
        with precision.autocast():
            result = model(next(stream).to(device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(result.loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        scaler.step(optimizer)  # skipped where float16 gradients overflowed
        scaler.update()
        scheduler.step()
        losses.append(result.loss.item())
        steps.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % budget.save_every == 0 or step + 1 == budget.steps:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "grad_scaler": scaler.state_dict(),
                "losses": losses,
            }
            with atomic_file(state_file) as handle:
                torch.save(state, handle)
    return losses
