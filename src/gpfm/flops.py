"""Model FLOPs and device peaks: the compute limit a throughput number is compared against.

``compute limit (items/s) = device peak FLOP/s ÷ FLOPs per item``; a benchmark reports its measured rate as a
fraction of it. FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on a real forward
(matrix multiplies and convolutions, 2 FLOPs per multiply-add; element-wise work is not counted, so the limit
is a slight overestimate). Peaks are the vendors' dense (no sparsity) tensor-core figures; a device not in the
table has no limit (None) rather than a guess.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# dense tensor-core peak FLOP/s by (device-name fragment, precision); the first matching fragment wins
_PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}),  # TF32 for fp32 matmuls
    ("H100 PCIe", {"bf16": 756.0e12, "fp16": 756.0e12, "fp32": 378.0e12}),
    ("H100", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}),  # SXM
    ("A100", {"bf16": 312.0e12, "fp16": 312.0e12, "fp32": 156.0e12}),
    ("L40S", {"bf16": 362.1e12, "fp16": 362.1e12, "fp32": 183.0e12}),
)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (forward and, when ``fn`` runs it, backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def forward_flops_per_item(model: torch.nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward of ``model`` per item of the batch ``example``."""
    with torch.inference_mode():
        return count_flops(lambda: model(example)) / example.shape[0]


def device_peak_flops(device: torch.device | str, precision: str) -> float | None:
    """Dense peak FLOP/s of ``device`` at ``precision`` (``bf16``/``fp16``/``fp32``), or None when unknown."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in _PEAKS:
        if fragment in name:
            return peaks.get(precision)
    return None


def compute_limit(flops_per_item: float, device: torch.device | str, precision: str) -> dict[str, float | None]:
    """``{"flops_per_item", "peak_flops", "compute_limit_per_s"}`` (limit None where the peak is unknown)."""
    peak = device_peak_flops(device, precision)
    return {"flops_per_item": float(flops_per_item), "peak_flops": peak,
            "compute_limit_per_s": None if peak is None else peak / flops_per_item}
