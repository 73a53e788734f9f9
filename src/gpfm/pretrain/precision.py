"""The pretraining precision rule, decided once for the student, the EMA teacher and the frozen experts.

Training differs from inference on purpose: ``auto`` is bf16 autocast on CUDA and fp32 on the CPU even where the
CPU has native bf16, because bit-exact resume on the CPU needs no autocast (inference precision is
:func:`gpfm.models.identity.resolve_encoder`'s rule). An explicit precision is validated by
:func:`gpfm.runtime.resolve_precision` (fp16 only on CUDA).
"""

from __future__ import annotations

import torch

from gpfm.runtime import resolve_precision


def training_precision(precision: str | None, device: torch.device) -> str:
    """``auto``/None → bf16 on CUDA, fp32 elsewhere; anything else is validated and returned."""
    if precision in (None, "auto"):
        return "bf16" if device.type == "cuda" else "fp32"
    return resolve_precision(precision, device)
