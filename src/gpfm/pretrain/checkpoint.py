"""Full, resumable training state: periodic, atomic (temp + fsync + rename), keep-last-K.

A checkpoint ``<run>/checkpoints/checkpoint_<iteration>.pt`` holds everything a bit-exact resume needs:
student, EMA teacher, heads and loss centers (``MetaArch.state_dict()``), the AdamW state, the iteration (the
schedules are closed-form functions of it), the samples consumed per rank (the sampler position), the RNG
states of every rank (torch CPU/CUDA, numpy, python), the resolved config and the experts' identities. The
frozen experts are never stored (only names and weight hashes). Files load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpfm.atomic import write_json_atomic
from gpfm.errors import GpfmError, one_line
from gpfm.models.checkpoints import save_torch_atomic
from gpfm.pretrain.dist import gather_objects

log = logging.getLogger(__name__)

FORMAT = "gpfm-pretrain-v1"
_NAME = re.compile(r"^checkpoint_(\d{8})\.pt$")


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors/ints/lists (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``<run>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temp files of interrupted writes are ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


class ResumeError(GpfmError):
    """A run folder cannot be resumed as asked (changed config, other architecture, no loadable checkpoint)."""


def health_path(checkpoint: Path) -> Path:
    """``checkpoint_<it>.json`` beside a checkpoint: its health verdict (finite weights, no loss spike)."""
    return checkpoint.with_suffix(".json")


def is_healthy(checkpoint: Path) -> bool:
    """False only when the checkpoint's health record says so (checkpoints of older runs have none)."""
    try:
        return bool(json.loads(health_path(checkpoint).read_text()).get("healthy", True))
    except (OSError, ValueError):
        return True


def quarantine(checkpoint: Path, reason: str) -> Path:
    """Rename a damaged checkpoint to ``*.pt.damaged`` (kept for inspection, never picked or pruned again)."""
    target = checkpoint.with_name(checkpoint.name + ".damaged")
    os.replace(checkpoint, target)
    log.warning("%s is damaged (%s); moved aside to %s", checkpoint, reason, target.name)
    return target


def load_resumable(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads and is healthy, falling back to older ones.

    A checkpoint that cannot be read (truncated, corrupted) is quarantined with a warning; one recorded as
    unhealthy (loss spike) is skipped while an older healthy one exists.

    Returns:
        (path, state), or None when the run has no checkpoint.

    Raises:
        ResumeError: checkpoints exist but none loads.
    """
    found = list_checkpoints(run_dir)
    if not found:
        return None
    candidates = [p for p in reversed(found) if is_healthy(p)] + [p for p in reversed(found) if not is_healthy(p)]
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except ValueError as exc:
            quarantine(path, one_line(exc, 200))
            continue
        if path != found[-1]:
            log.warning("resuming from %s, not the newest checkpoint %s", path.name, found[-1].name)
        return path, state
    raise ResumeError(f"{checkpoint_dir(run_dir)}: none of the {len(found)} checkpoints could be read (moved aside "
                      "as *.damaged); start a fresh run with --no-resume or another train.output_dir")


def _model_and_optim_state(meta: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    params = list(meta.student.parameters())
    if params and hasattr(params[0], "full_tensor"):  # FSDP2: gather full tensors onto the CPU
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(meta, optimizer, options=opts)
        return model_sd, optim_sd
    return meta.state_dict(), optimizer.state_dict()


def save_checkpoint(
    run_dir: str | Path,
    *,
    iteration: int,
    meta: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples_per_rank: int,
    config: dict,
    extra: dict | None = None,
    keep_last: int = 3,
    is_main: bool = True,
    health: dict | None = None,
) -> Path:
    """Write the full state at ``iteration`` (the next iteration to run) on rank 0; all ranks must call it.

    Args:
        run_dir: run folder.
        iteration: number of completed iterations (training resumes at this iteration).
        meta: the :class:`~gpfm.pretrain.meta_arch.MetaArch` (student, teacher, centers).
        optimizer: the AdamW optimizer.
        samples_per_rank: samples consumed by each rank's sampler so far.
        config: resolved config dict.
        extra: more metadata (expert identities, world size, ...).
        keep_last: complete checkpoints to keep (older ones are deleted after the new one is in place; the
            newest healthy one is always kept).
        is_main: whether this process writes.
        health: the health verdict written beside the checkpoint (``{"healthy": bool, "reason": str, ...}``).

    Returns:
        The checkpoint path.
    """
    rng_all = gather_objects(capture_rng())
    model_sd, optim_sd = _model_and_optim_state(meta, optimizer)
    path = checkpoint_dir(run_dir) / f"checkpoint_{iteration:08d}.pt"
    if is_main:
        state = {
            "format": FORMAT,
            "iteration": iteration,
            "model": model_sd,
            "optimizer": optim_sd,
            "rng": rng_all,
            "samples_per_rank": samples_per_rank,
            "config": config,
            "extra": extra or {},
        }
        save_torch_atomic(state, path)
        write_json_atomic(health_path(path), {"iteration": iteration, **(health or {"healthy": True})})
        prune_checkpoints(run_dir, keep_last)
        log.info("saved %s", path)
    return path


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints, and always the newest healthy one (the NaN-guard fallback)."""
    if keep_last <= 0:
        return
    found = list_checkpoints(run_dir)
    healthy = [p for p in found if is_healthy(p)]
    keep = set(found[-keep_last:]) | ({healthy[-1]} if healthy else set())
    for old in found:
        if old not in keep:
            old.unlink(missing_ok=True)
            health_path(old).unlink(missing_ok=True)


def latest_healthy_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint recorded as healthy, or None."""
    healthy = [p for p in list_checkpoints(run_dir) if is_healthy(p)]
    return healthy[-1] if healthy else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (CPU tensors, ``weights_only=True``).

    Raises:
        ValueError: not a gpfm pretraining checkpoint (the message names the file).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: cannot read the pretraining checkpoint ({type(exc).__name__}: {one_line(exc, 200)}); "
            "pass a checkpoint_<iteration>.pt written by gpfm pretrain"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a gpfm pretraining checkpoint (format {FORMAT!r} expected)")
    return state


def restore_state(
    state: dict[str, Any],
    meta: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Load model, optimizer and this rank's RNG state from a checkpoint dict (strict)."""
    saved_world = len(state["rng"])
    if saved_world != world_size:
        raise ValueError(
            f"checkpoint was written by {saved_world} processes but this run has {world_size}; "
            "resume with the same world size (the data stream and RNG are per rank)"
        )
    params = list(meta.student.parameters())
    if params and hasattr(params[0], "full_tensor"):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(
            meta,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
    else:
        try:
            meta.load_state_dict(state["model"], strict=True)
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ResumeError(
                f"the checkpoint does not fit this model ({one_line(exc, 160)}); it was written with another "
                "architecture or head configuration — resume with the run's own config.yaml, or start a new "
                "train.output_dir"
            ) from exc
    restore_rng(state["rng"][rank])
