"""``create_encoder(name, ...)``: build a registered encoder (:mod:`gpfm.models.catalog`) and load its weights."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from gpfm.errors import one_line
from gpfm.models.catalog import ENCODERS, get_encoder_spec, list_encoders, register_encoder  # noqa: F401
from gpfm.models.checkpoints import CheckpointError, file_md5, load_strict, read_checkpoint
from gpfm.models.encoder import Encoder
from gpfm.models.identity import resolve_encoder
from gpfm.models.spec import EncoderSpec
from gpfm.models.weights import RANDOM

log = logging.getLogger(__name__)

def create_encoder(
    name: str | EncoderSpec,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
    *,
    allow_unverified: bool = False,
    verbose: bool = True,
) -> Encoder:
    """Build a registered encoder and load its weights strictly.

    Args:
        name: registry name, e.g. ``gpfm``, ``uni``, ``efficientnet-lite0-imagenet`` (see :func:`list_encoders`),
            or an unregistered :class:`EncoderSpec` (e.g. an exported pretraining teacher).
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
    identity = resolve_encoder(name, weights, device, precision)
    spec, sha = identity.spec, identity.weights_sha256
    model = spec.build()
    if identity.weights_path is None:
        fmt, path = RANDOM, None
    else:
        path = str(identity.weights_path)
        state_dict, fmt = _convert(spec, identity.weights_path)
        _verify_checksum(spec, identity.weights_path, fmt, sha, allow_unverified)
        load_strict(model, state_dict, source=path)
        if verbose:
            log.info("%s: loaded %s (%s layout, from %s) sha256=%s", spec.name, path, fmt, identity.weights_source,
                     sha)
    model.eval().requires_grad_(False).to(identity.device)
    return Encoder(spec, model, device=identity.device, precision=identity.precision, weights_sha256=sha,
                   weights_path=path, checkpoint_format=fmt)


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
