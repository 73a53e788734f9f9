"""One answer to "which encoder, exactly?": weights file and SHA-256, device and precision, resolved once.

Every part of gpfm that needs an encoder's identity — ``create_encoder``, ``gpfm extract`` (through it), the
benchmark runner's run keys, the ROI feature cache keys, pretraining experts and ``pretrain-export`` — asks
:func:`resolve_encoder`, so the precision rule (hardware default × the encoder's recorded half-precision parity)
and the weights identity are decided in this one place. Resolution builds no model: a cache hit on a ViT-L costs
a ``stat`` (the SHA-256 is cached by path, size and mtime), not a model load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from gpfm.models.spec import EncoderSpec
from gpfm.runtime import resolve_device, resolve_precision
from gpfm.weights import RANDOM, resolve_weights


@dataclass(frozen=True)
class EncoderIdentity:
    """An encoder as it will run.

    Attributes:
        spec: the registry entry.
        weights_path: the weights file (None for explicit random weights).
        weights_source: where it was found (``argument``, ``env:<VAR>``, ``weights_dir``, ``package``, ...).
        weights_sha256: SHA-256 of the file, or ``random``.
        device: the torch device.
        precision: ``fp32``/``bf16``/``fp16``, resolved (never ``auto``).
    """

    spec: EncoderSpec
    weights_path: Path | None
    weights_source: str
    weights_sha256: str
    device: torch.device
    precision: str

    @property
    def name(self) -> str:
        """The registry name."""
        return self.spec.name


def resolve_encoder(
    name: str | EncoderSpec,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
) -> EncoderIdentity:
    """Resolve an encoder's weights, their SHA-256, the device and the precision, without building it.

    Args:
        name: registry name, or an unregistered :class:`EncoderSpec` (e.g. an exported pretraining teacher).
        weights: a path, ``"random"``, or None to search the usual places.
        device: ``cpu``/``cuda``/``cuda:1``/a device, or None for CUDA when available.
        precision: ``fp32``/``bf16``/``fp16``/``auto``/None (None and ``auto``: a half dtype only where the
            encoder's spec allows it and the hardware runs it natively, else fp32).

    Raises:
        UnknownNameError: the name is not registered (the message lists the known ones).
        WeightsNotFoundError: no weights offline (the message says where to get them).
    """
    from gpfm.models.catalog import get_encoder_spec
    from gpfm.models.checkpoints import file_sha256

    spec = name if isinstance(name, EncoderSpec) else get_encoder_spec(name)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev, half_ok=spec.half_precision_ok)
    resolved = resolve_weights(spec, weights)
    sha = RANDOM if resolved.path is None else file_sha256(resolved.path)
    return EncoderIdentity(spec, resolved.path, resolved.source, sha, dev, prec)
