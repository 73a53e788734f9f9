"""Offline-first weight resolution for every model gpfm loads (encoders, tissue segmenters).

Order: explicit path → env var → local weights folder → packaged file → hub cache → hub download when online.

Never a silent random initialisation: when nothing is found, :class:`WeightsNotFoundError` says where to get
the weights and how to pass them. ``weights="random"`` is the explicit opt-in for tests and timing. A model
entry is anything with a ``name`` and a :class:`WeightSource` ``weights`` (see :class:`HasWeights`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from gpfm.errors import GpfmError, one_line

RANDOM = "random"
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


@dataclass(frozen=True)
class WeightSource:
    """Where a model's pretrained weights come from, and how they are verified.

    Attributes:
        env_var: environment variable that may hold a local path to the weights (e.g. ``GPFM_WEIGHTS``).
        hf_repo: Hugging Face repository id (optional download when online).
        hf_filename: file inside ``hf_repo``.
        url: official direct download location (informational; shown in the error message).
        pinned: published checksums as ``(checkpoint_format, algorithm, hexdigest)``; a file whose detected
            layout has a pinned checksum must match it (``md5`` only where that is all that was published).
        license: licence of the weights.
        gated: whether the hub repository requires accepting terms.
        packaged: callable returning the path of weights shipped inside an installed Python package.
        notes: extra instructions shown when the weights are missing.
    """

    env_var: str
    hf_repo: str | None = None
    hf_filename: str | None = None
    url: str | None = None
    pinned: tuple[tuple[str, str, str], ...] = ()
    license: str = "unknown"
    gated: bool = False
    packaged: Callable[[], str] | None = None
    notes: str = ""


class HasWeights(Protocol):
    """A registered model: its registry name and where its weights come from."""

    @property
    def name(self) -> str:
        """Registry name."""

    @property
    def weights(self) -> WeightSource:
        """Weight source."""


class WeightsNotFoundError(GpfmError, FileNotFoundError):
    """No weights could be found offline for a model; the message says how to provide them."""


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the weights were found.

    Attributes:
        path: local file, or None for random weights.
        source: ``argument``, ``env:<VAR>``, ``weights_dir``, ``package``, ``hf_cache``, ``hf_download``,
            or ``random``.
    """

    path: Path | None
    source: str


def weights_dir() -> Path:
    """Local weights folder: ``$GPFM_WEIGHTS_DIR`` or ``<cache>/weights``; files named ``<model>.*``."""
    from gpfm.runtime import cache_dir

    return Path(os.environ.get("GPFM_WEIGHTS_DIR", cache_dir() / "weights"))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def _missing_message(spec: HasWeights) -> str:
    w = spec.weights
    where = []
    if w.hf_repo:
        gated = " (gated: accept the terms on the model page first)" if w.gated else ""
        where.append(f"https://huggingface.co/{w.hf_repo} file {w.hf_filename}{gated}")
    if w.url:
        where.append(w.url)
    where_txt = " or ".join(where) if where else "the model authors"
    kind, flag = getattr(spec, "kind", "encoder"), getattr(spec, "cli_flag", "--weights")
    return (
        f"no weights found for {kind} {spec.name!r}: download them from {where_txt}, then pass "
        f"{flag} PATH (Python: weights=PATH), set {w.env_var}=PATH, or put the file at "
        f"{weights_dir() / (spec.name + '.pth')}. {w.notes}".strip()
    )


def resolve_weights(spec: HasWeights, weights: str | os.PathLike[str] | None) -> ResolvedWeights:
    """Find the weights file for ``spec`` without touching the network unless allowed.

    Args:
        spec: the encoder entry.
        weights: ``"random"``, an explicit path, or None to search.

    Raises:
        WeightsNotFoundError: nothing found (offline), or an explicit path that does not exist.
    """
    if weights is not None and str(weights) == RANDOM:
        return ResolvedWeights(None, RANDOM)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: weights file for {spec.name!r} not found; check the path")
        return ResolvedWeights(path, "argument")
    env_value = os.environ.get(spec.weights.env_var)
    if env_value:
        path = Path(env_value).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{spec.weights.env_var}={env_value}: file not found; fix or unset the variable"
            )
        return ResolvedWeights(path, f"env:{spec.weights.env_var}")
    for suffix in _WEIGHT_SUFFIXES:
        candidate = weights_dir() / f"{spec.name}{suffix}"
        if candidate.is_file():
            return ResolvedWeights(candidate, "weights_dir")
    if spec.weights.packaged is not None:
        try:
            path = Path(spec.weights.packaged())
        except ImportError:
            path = None
        if path is not None and path.is_file():
            return ResolvedWeights(path, "package")
    if spec.weights.hf_repo and spec.weights.hf_filename:
        found = _from_hub(spec)
        if found is not None:
            return found
    raise WeightsNotFoundError(_missing_message(spec))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers one quick TCP connect.

    Done at resolution time, never at import, so offline runs fail fast instead of waiting through
    huggingface_hub's retry back-off.
    """
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(spec: HasWeights) -> ResolvedWeights | None:
    try:
        import huggingface_hub as hf
    except ImportError:
        return None
    repo, filename = spec.weights.hf_repo, spec.weights.hf_filename
    cached = hf.try_to_load_from_cache(repo_id=repo, filename=filename)
    if isinstance(cached, str) and Path(cached).is_file():
        return ResolvedWeights(Path(cached), "hf_cache")
    if _hub_offline() or not _hub_reachable():
        return None
    try:
        path = hf.hf_hub_download(repo_id=repo, filename=filename)
    except Exception:  # offline, gated, or not found: fall through to the clear message
        return None
    return ResolvedWeights(Path(path), "hf_download")


class CheckpointError(GpfmError, ValueError):
    """A checkpoint could not be read, recognised or loaded strictly; the message says how to fix it."""


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``.safetensors``, ``.pth``/``.pt``/``.bin`` checkpoint onto the CPU without executing code.

    Raises:
        CheckpointError: unreadable file, with the path and the likely fix.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass an existing path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes); the download or copy did not "
                              "finish — fetch it again")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: {one_line(exc, 200)}); "
            "is the file complete? re-download it or pass a .safetensors/.pth state dict"
        ) from exc


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names missing/unexpected/mis-shaped keys.

    Raises:
        CheckpointError: naming up to 10 keys of each kind and the source file.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape = [
        f"{k} {tuple(state_dict[k].shape)}≠{tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:10])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:10])}")
        if shape:
            parts.append(f"wrong shape {len(shape)}: {', '.join(shape[:10])}")
        raise CheckpointError(
            f"{source}: checkpoint does not match the architecture ({'; '.join(parts)}); "
            "check that the file belongs to this encoder"
        )
    module.load_state_dict(state_dict, strict=True)
