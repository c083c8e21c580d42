"""The precision samnet's own loops compute in: float16 autocast on CUDA, float32 elsewhere.

nnU-Net's trainer already trains under ``torch.autocast`` on CUDA (float16, with a
``GradScaler``); the loops samnet runs outside it, the embedding cache build and
``samnet_pretrain``, take the same decision from ``precision_for``.

float16 rather than bfloat16:

- it is what nnU-Net's trainer uses, so a SAM model is pre-trained, cached and fine-tuned
  in one precision;
- the embedding cache stores float16: computed in float16 its values keep float16's 11
  significant bits, where bfloat16 would keep 8 and then be stored in 11;
- every CUDA GPU computes float16 on tensor cores; bfloat16 needs Ampere or newer.

Its narrower range (up to 65504) is what the ``GradScaler`` of training is for; autocast
keeps reductions, softmax and norms in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CUDA_AUTOCAST_DTYPE = torch.float16


@dataclass(frozen=True)
class Precision:
    """How a loop computes on one device type.

    Attributes:
      device_type: ``"cuda"``, ``"cpu"``, ... (``torch.device.type``).
      autocast_dtype: the dtype autocast computes matrix products and convolutions in;
        None: everything in float32, no autocast.
    """

    device_type: str
    autocast_dtype: torch.dtype | None

    @property
    def enabled(self) -> bool:
        return self.autocast_dtype is not None

    @property
    def compute_dtype(self) -> str:
        """``"float16"``, ``"float32"``: the name the embedding cache key records."""
        return str(self.autocast_dtype or torch.float32).removeprefix("torch.")

    def autocast(self) -> torch.autocast:
        """The context a forward pass runs in (disabled: unchanged float32)."""
        return torch.autocast(
            self.device_type, dtype=self.autocast_dtype, enabled=self.enabled
        )

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for float16 gradients; disabled (a pass-through) otherwise."""
        return torch.amp.GradScaler(
            self.device_type, enabled=self.autocast_dtype == torch.float16
        )


def precision_for(device: torch.device | str) -> Precision:
    """float16 autocast on CUDA; float32 on CPU (and any other device), as before AMP."""
    device_type = torch.device(device).type
    return Precision(
        device_type, CUDA_AUTOCAST_DTYPE if device_type == "cuda" else None
    )
