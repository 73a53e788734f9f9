"""The encoder registry: one entry per name, discovered from the files of :mod:`gpfm.models.encoders`.

An encoder is added by one file in ``gpfm/models/encoders/`` that calls :func:`register_encoder` with an
:class:`~gpfm.models.spec.EncoderSpec`; the first lookup imports every file of that folder.
"""

from __future__ import annotations

from gpfm.models.spec import EncoderSpec
from gpfm.registry import Registry

ENCODERS: Registry[EncoderSpec] = Registry("encoder", discover="gpfm.models.encoders")


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an encoder spec to the registry (names must be unique)."""
    ENCODERS.register(spec.name, spec)
    return spec


def list_encoders() -> list[str]:
    """Names of all registered encoders, sorted."""
    return ENCODERS.names()


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registry entry for ``name`` (raises with the known names if unknown)."""
    return ENCODERS.get(name)
