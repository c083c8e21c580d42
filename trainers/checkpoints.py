"""nnU-Net trainer checkpoints as samnet writes and reads them.

Written whole or not at all (``AtomicCheckpointMixin``): a kill mid-write leaves the
previous checkpoint as it was. Read without running code (``read_checkpoint``): PyTorch's
``weights_only`` unpickler, which builds tensors, containers, numbers and the numpy
scalars nnU-Net logs, and refuses anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samnet.core.atomic import atomic_path
from samnet.core.errors import SamnetError


class AtomicCheckpointMixin:
    """Put in front of an nnU-Net trainer class: each checkpoint goes to a temporary
    sibling that replaces ``filename`` once complete (``samnet.core.atomic.atomic_path``).

    The trainer's own ``save_checkpoint`` writes the temporary file by its path, so any
    trainer's checkpoint (nnU-Net's, samnet's trained-only one) is written this way.
    """

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)  # writes nothing (and logs why)
            return
        with atomic_path(Path(filename)) as temporary:
            super().save_checkpoint(str(temporary))


def safe_globals() -> list[Any]:
    """What nnU-Net's checkpoints hold beyond tensors and plain types: numpy scalars
    (its logger's losses and Dice, ``_best_ema``), rebuilt from a numeric dtype and bytes."""
    import numpy as np

    scalar = np._core.multiarray.scalar
    numeric = [
        getattr(np.dtypes, name)
        for name in np.dtypes.__all__
        if name.startswith(("Bool", "Int", "UInt", "Float"))
    ]
    # Checkpoints pickled under numpy 1 name the scalar by its old module.
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *numeric]


def load_failure(error: Exception) -> str:
    """``torch.load``'s error in one line: for a refused object, the object it names."""
    text = str(error).split("WeightsUnpickler error: ", 1)[-1].strip()
    first_line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first_line.split(' was not an allowed', 1)[0]}"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's content, read without unpickling code; tensors are memory-mapped,
    so reading a large network's checkpoint for its log costs little.

    One torn by a kill mid-write, or holding objects other than tensors, containers and
    numbers, is a clear error.
    """
    import torch  # heavy: keeps the commands' --help fast

    try:
        with torch.serialization.safe_globals(safe_globals()):
            checkpoint = torch.load(
                path, map_location="cpu", weights_only=True, mmap=True
            )
    except Exception as error:
        raise SamnetError(
            path,
            f"cannot be read as a checkpoint ({load_failure(error)}); it was "
            "torn by a kill mid-write, or it holds objects other than tensors and "
            "numbers, which samnet does not unpickle",
            "delete it to restart this fold (from checkpoint_latest.pth where there is "
            "one, else from epoch 0), or pass --overwrite to retrain the fold",
        ) from error
    if not isinstance(checkpoint, dict):
        raise SamnetError(
            path,
            "is not an nnU-Net checkpoint (no dict at its top)",
            "delete it, or pass --overwrite to retrain the fold",
        )
    return checkpoint
