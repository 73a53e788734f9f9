"""``create_encoder(name, ...)`` and ``list_encoders()``: every encoder is constructible by name."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from gpfm.errors import one_line
from gpfm.models.checkpoints import CheckpointError, file_md5, file_sha256, load_strict, read_checkpoint
from gpfm.models.encoder import Encoder
from gpfm.models.spec import EncoderSpec
from gpfm.models.weights import RANDOM, resolve_weights
from gpfm.registry import Registry
from gpfm.runtime import resolve_device, resolve_precision

log = logging.getLogger(__name__)

ENCODERS: Registry[EncoderSpec] = Registry("encoder")


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an encoder spec to the registry (names must be unique)."""
    ENCODERS.register(spec.name, spec)
    return spec


def _ensure_registered() -> None:
    # importing the package registers every entry once
    import gpfm.models.encoders  # noqa: F401


def list_encoders() -> list[str]:
    """Names of all registered encoders, sorted."""
    _ensure_registered()
    return ENCODERS.names()


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registry entry for ``name`` (raises with the known names if unknown)."""
    _ensure_registered()
    return ENCODERS.get(name)


def create_encoder(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
    *,
    allow_unverified: bool = False,
    verbose: bool = True,
) -> Encoder:
    """Build a registered encoder and load its weights strictly.

    Args:
        name: registry name, e.g. ``gpfm``, ``uni``, ``efficientnet-lite0-imagenet`` (see :func:`list_encoders`).
        weights: a path, ``"random"`` (explicit random init, for tests and timing), or None to search
            ``$<NAME>_WEIGHTS``, the local weights folder, packaged files and the Hugging Face cache.
        device: ``cpu``, ``cuda``, ``cuda:1`` ... or None for CUDA when available.
        precision: ``fp32``, ``bf16``, ``fp16`` (CUDA) or None for the hardware default (bf16 where the CPU
            or GPU runs it natively and the encoder passed the parity test; else fp32).
        allow_unverified: accept a weights file whose checksum differs from the pinned one.
        verbose: log the detected checkpoint format and SHA-256.

    Returns:
        An :class:`Encoder` in eval mode on ``device``.

    Raises:
        WeightsNotFoundError: no weights offline (the message says where to get them).
        CheckpointError: unreadable checkpoint, unknown layout, or a strict-load mismatch naming the keys.

    Examples:
        >>> enc = create_encoder("gpfm", weights="random", device="cpu", precision="fp32")
        >>> enc.embed_dim
        1024
    """
    spec = get_encoder_spec(name)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev, half_parity_ok="bf16" in spec.half_precision_ok)
    resolved = resolve_weights(spec, weights)
    model = spec.build()
    if resolved.path is None:
        sha, fmt, path = RANDOM, RANDOM, None
    else:
        path = str(resolved.path)
        sha = file_sha256(resolved.path)
        state_dict, fmt = _convert(spec, resolved.path)
        _verify_checksum(spec, resolved.path, fmt, sha, allow_unverified)
        load_strict(model, state_dict, source=path)
        if verbose:
            log.info("%s: loaded %s (%s layout, from %s) sha256=%s", name, path, fmt, resolved.source, sha)
    model.eval().requires_grad_(False).to(dev)
    return Encoder(spec, model, device=dev, precision=prec, weights_sha256=sha, weights_path=path,
                   checkpoint_format=fmt)


#: Environment variable that accepts a weights file whose checksum differs from the published one (any command).
ALLOW_UNVERIFIED_ENV = "GPFM_ALLOW_UNVERIFIED"


def _verify_checksum(spec: EncoderSpec, path: os.PathLike[str], fmt: str, sha: str, allow_unverified: bool) -> None:
    for layout, algo, digest in spec.weights.pinned:
        if layout != fmt:
            continue
        actual = sha if algo == "sha256" else file_md5(path)
        allowed = allow_unverified or os.environ.get(ALLOW_UNVERIFIED_ENV, "").lower() in {"1", "true", "yes"}
        if actual != digest and not allowed:
            raise CheckpointError(
                f"{path}: {algo} {actual} does not match the published {digest} for {spec.name!r} ({fmt} layout); "
                f"re-download the file, or set {ALLOW_UNVERIFIED_ENV}=1 (Python: allow_unverified=True) to load "
                "it anyway"
            )
        if actual != digest:
            log.warning("%s: checksum differs from the published one; loading anyway (%s)", path, ALLOW_UNVERIFIED_ENV)


def _convert(spec: EncoderSpec, path: os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """Read and convert a checkpoint; a file made for another architecture is a one-line CheckpointError."""
    raw = read_checkpoint(path)
    try:
        return spec.convert_state_dict(raw)
    except CheckpointError as exc:
        if str(path) in str(exc):
            raise
        raise CheckpointError(f"{path}: {one_line(exc, 300)}; pass the weights file of {spec.name!r}, or choose "
                              "the encoder these weights belong to") from exc
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError, IndexError) as exc:
        keys = ", ".join(list(raw)[:5]) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{path}: not a {spec.name!r} checkpoint ({type(exc).__name__}: {one_line(exc, 120)}; first keys: "
            f"{keys}); pass the weights file of {spec.name!r}, or choose the encoder these weights belong to"
        ) from exc
