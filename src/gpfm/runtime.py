"""Device and precision choice, decided from the hardware rather than hard-coded.

bf16 on CPU is only fast where the CPU has native bf16 support (AVX-512-BF16 / AMX); on AVX2-only CPUs a
ViT-L runs 3-6x slower in bf16 than in fp32, so the CPU default follows the measured capability.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a torch.device; ``None``/"auto" means CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; pass --device cpu")
    return dev


@functools.cache
def cpu_capability() -> str:
    """The CPU's vector capability as torch sees it (e.g. "AVX512", "AVX2", "DEFAULT")."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # very old torch
        return "unknown"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU executes bf16 matmuls natively (avx512_bf16 or AMX), so bf16 pays off."""
    if cpu_capability() not in {"AVX512", "AVX512_BF16", "AMX"}:
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_precision(device: torch.device, half_ok: Iterable[str] = ("bf16",)) -> Precision:
    """Pick the default precision for ``device``.

    Args:
        device: where the model runs.
        half_ok: the half dtypes this encoder may default to (``EncoderSpec.half_precision_ok``): each backed by a
            parity result with real weights or prescribed by the model's authors. Empty: always fp32.
    """
    half_ok = frozenset(half_ok)
    if device.type == "cuda":
        if "bf16" in half_ok and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if "fp16" in half_ok else "fp32"
    return "bf16" if "bf16" in half_ok and cpu_has_native_bf16() else "fp32"


def resolve_precision(precision: str | None, device: torch.device, half_ok: Iterable[str] = ("bf16",)) -> Precision:
    """Validate an explicit precision or choose the default (see :func:`default_precision`); fp16 is CUDA-only."""
    if precision is None or precision == "auto":
        return default_precision(device, half_ok)
    if precision not in _DTYPES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)} or 'auto'")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 is supported on CUDA only; use bf16 or fp32 on CPU")
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def cache_dir() -> Path:
    """Gpfm's cache folder: ``$GPFM_CACHE_DIR`` or ``~/.cache/gpfm`` (weights, demo slide, hash cache)."""
    return Path(os.environ.get("GPFM_CACHE_DIR", Path.home() / ".cache" / "gpfm")).expanduser()


def machine_info() -> dict[str, object]:
    """Facts every benchmark prints next to its numbers."""
    import os
    import platform

    info: dict[str, object] = {
        "cpu_capability": cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info
