"""Read checkpoints, detect the GPFM layout, convert between layouts, load strictly, hash files.

GPFM circulates in two layouts:

* **format A** — the DINOv2 training ("teacher") checkpoint: ``{"teacher": {...}}`` with ``backbone.`` prefixes,
  FSDP-chunked blocks ``backbone.blocks.<chunk>.<global index>.*``, a ``mask_token`` and a ``dino_head``;
* **format B** — a timm state dict: ``blocks.<i>.*`` with no prefix, mask token or head.

Both load into the same timm-layout ViT after :func:`gpfm_to_timm`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gpfm.atomic import atomic_path, write_text_atomic
from gpfm.hashing import file_digest
from gpfm.runtime import cache_dir as gpfm_cache_dir
from gpfm.weights import CheckpointError, load_strict, read_checkpoint  # noqa: F401 - re-exported

FORMAT_A = "dinov2-teacher"
FORMAT_A_BODY = "dinov2-backbone"
FORMAT_B = "timm"

_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")
_CHUNKED_NORM1 = re.compile(r"^blocks\.\d+\.\d+\.norm1\.weight$")
_FLAT_NORM1 = re.compile(r"^blocks\.(\d+)\.norm1\.weight$")


def _first_keys(sd: Mapping[str, Any], n: int = 10) -> str:
    return ", ".join(list(sd)[:n])


def detect_gpfm_format(ckpt: Mapping[str, Any]) -> str:
    """Detect the layout of a GPFM checkpoint (rules applied in order).

    Returns:
        ``dinov2-teacher`` (format A, wrapped), ``dinov2-backbone`` (format A body, prefixed or chunked) or
        ``timm`` (format B).

    Raises:
        CheckpointError: unrecognised layout, listing the first 10 keys.
    """
    if "teacher" in ckpt and isinstance(ckpt["teacher"], Mapping):
        return FORMAT_A
    keys = list(ckpt)
    if any(k.startswith("backbone.") for k in keys):
        return FORMAT_A_BODY
    for wrapper in ("state_dict", "model"):
        if wrapper in ckpt and isinstance(ckpt[wrapper], Mapping):
            return detect_gpfm_format(ckpt[wrapper])
    if any(_CHUNKED_NORM1.match(k) for k in keys):
        return FORMAT_A_BODY
    if any(_FLAT_NORM1.match(k) for k in keys):
        return FORMAT_B
    raise CheckpointError(f"unrecognised GPFM checkpoint layout; first keys: {_first_keys(ckpt)}")


def _unwrap(ckpt: Mapping[str, Any]) -> Mapping[str, Any]:
    if "teacher" in ckpt and isinstance(ckpt["teacher"], Mapping):
        return ckpt["teacher"]
    if not any(k.startswith(("backbone.", "blocks.")) for k in ckpt):
        for wrapper in ("state_dict", "model"):
            if wrapper in ckpt and isinstance(ckpt[wrapper], Mapping):
                return _unwrap(ckpt[wrapper])
    return ckpt


def gpfm_to_timm(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Convert either GPFM layout to the timm layout (format B), fp32.

    A → B: drop ``dino_head.*``/``ibot_head.*`` and ``mask_token``, strip ``backbone.``, un-chunk
    ``blocks.<c>.<i>.`` → ``blocks.<i>.``.

    Returns:
        (state_dict, detected format name).
    """
    fmt = detect_gpfm_format(ckpt)
    body = _unwrap(ckpt)
    out: dict[str, torch.Tensor] = {}
    for key, value in body.items():
        if key.startswith(("dino_head.", "ibot_head.")) or not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("backbone.")
        if key == "mask_token":
            continue
        key = _CHUNKED.sub(r"blocks.\1.", key)
        out[key] = value.float()
    return out, fmt


def timm_to_gpfm_teacher(
    state_dict: Mapping[str, torch.Tensor],
    *,
    chunks: int = 4,
    depth: int | None = None,
    mask_token: torch.Tensor | None = None,
    dino_head: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Convert a timm-layout backbone to format A (``{"teacher": ...}``, chunked blocks, ``backbone.``).

    Args:
        state_dict: format-B state dict.
        chunks: number of FSDP chunks (GPFM: 4 chunks of 6 blocks).
        depth: number of blocks (inferred from the keys when None).
        mask_token: the trained mask token if available, otherwise zeros (1, D).
        dino_head: optional DINO head tensors, stored under ``dino_head.``.
    """
    if depth is None:
        depth = 1 + max(int(m.group(1)) for k in state_dict if (m := _FLAT_NORM1.match(k)))
    per_chunk = -(-depth // chunks)
    teacher: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        if m:
            i = int(m.group(1))
            key = f"blocks.{i // per_chunk}.{i}.{m.group(2)}"
        teacher[f"backbone.{key}"] = value
    dim = state_dict["cls_token"].shape[-1]
    teacher["backbone.mask_token"] = mask_token if mask_token is not None else torch.zeros(1, dim)
    for key, value in (dino_head or {}).items():
        teacher[f"dino_head.{key}"] = value
    return {"teacher": teacher}


def file_sha256(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) so multi-GB weights are hashed once."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_file = Path(cache_dir or gpfm_cache_dir()) / "sha256.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    value = file_digest(path)
    try:
        cache[key] = value
        write_text_atomic(cache_file, json.dumps(cache))
    except OSError:
        pass  # the cache is an optimisation only
    return value


def file_md5(path: str | os.PathLike[str]) -> str:
    """MD5 of a file (only for third-party published checksums; we pin SHA-256)."""
    return file_digest(path, "md5")


def save_safetensors_atomic(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                            metadata: Mapping[str, str] | None = None) -> None:
    """Write a state dict as safetensors via temp file + fsync + atomic rename."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata=dict(metadata or {}))


def save_torch_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` via temp file + fsync + atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def unwrap_timm_state_dict(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """A plain timm-layout state dict, unwrapping ``state_dict``/``model`` wrappers and ``module.`` prefixes."""
    for wrapper in ("state_dict", "model"):
        if wrapper in ckpt and isinstance(ckpt[wrapper], Mapping):
            ckpt = ckpt[wrapper]
    out = {k.removeprefix("module."): v.float() if v.is_floating_point() else v
           for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise CheckpointError(f"no tensors found in checkpoint; first keys: {_first_keys(ckpt)}")
    return out, FORMAT_B
