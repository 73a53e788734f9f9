"""``gpfm convert``: rewrite a GPFM checkpoint of either layout as timm safetensors (or as format A)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpfm.errors import InputError, one_line
from gpfm.models.checkpoints import (
    CheckpointError,
    file_sha256,
    gpfm_to_timm,
    load_strict,
    read_checkpoint,
    save_safetensors_atomic,
    save_torch_atomic,
    timm_to_gpfm_teacher,
)
from gpfm.models.vit import GPFM_VITL14, ViTConfig, build_vit


@dataclass(frozen=True)
class ConversionReport:
    """What was read and written."""

    source: Path
    source_format: str
    source_sha256: str
    out: Path
    out_format: str
    out_sha256: str
    n_tensors: int


def convert_gpfm_checkpoint(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    to: str = "timm",
    vit: ViTConfig = GPFM_VITL14,
) -> ConversionReport:
    """Convert a GPFM checkpoint (format A or B, auto-detected) and validate it by a strict load.

    Args:
        source: input ``.pth``/``.safetensors``.
        out: output path; ``to="timm"`` writes safetensors, ``to="dinov2"`` writes a ``{"teacher": ...}`` .pth.
        to: ``timm`` (format B) or ``dinov2`` (format A, chunked blocks, zero mask token).
        vit: architecture to validate against (the GPFM ViT-L/14 by default).
    """
    if to not in ("timm", "dinov2"):
        raise InputError(f"unknown target layout {to!r}; use --to timm or --to dinov2")
    raw = read_checkpoint(source)
    try:
        state_dict, fmt = gpfm_to_timm(raw)
        load_strict(build_vit(vit), state_dict, source=str(source))  # strict validation before writing anything
    except CheckpointError as exc:
        if str(source) in str(exc):
            raise
        raise CheckpointError(f"{source}: {one_line(exc, 300)}; is this a GPFM (ViT-L/14) checkpoint?") from exc
    out = Path(out)
    if to == "timm":
        save_safetensors_atomic(state_dict, out, metadata={"format": "timm", "source_format": fmt})
    elif to == "dinov2":
        save_torch_atomic(timm_to_gpfm_teacher(state_dict, depth=vit.depth), out)
    else:
        raise InputError(f"unknown target layout {to!r}; use --to timm or --to dinov2")
    return ConversionReport(Path(source), fmt, file_sha256(source), out, to, file_sha256(out), len(state_dict))
