"""The encoder registry: one entry per name, discovered from the files of :mod:`gpfm.models.encoders`.

An encoder is added by one file in ``gpfm/models/encoders/`` that calls :func:`register_encoder` with an
:class:`~gpfm.models.spec.EncoderSpec`; the first lookup imports every file of that folder and calls the
``gpfm.encoders`` entry points of installed plugins. ``timm:<model_name>`` names any timm model
(:mod:`gpfm.models.custom`); ``pretrained:<folder>`` a student exported by ``gpfm pretrain-export``
(:mod:`gpfm.models.exported`).
"""

from __future__ import annotations

from gpfm.models.spec import EncoderSpec
from gpfm.registry import Registry

ENCODERS: Registry[EncoderSpec] = Registry("encoder", discover="gpfm.models.encoders")

#: GPFM's comparison (Ma et al. 2025): the model and its eight baselines, by registry name
PAPER_COMPARISON: tuple[str, ...] = ("gpfm", "uni", "prov-gigapath", "phikon", "conch", "ctranspath", "chief", "plip",
                                     "resnet50-imagenet")


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an encoder spec to the registry (names must be unique)."""
    ENCODERS.register(spec.name, spec)
    return spec


_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded  # noqa: PLW0603 - once per process, like the registry's own discovery
    if not _plugins_loaded:
        _plugins_loaded = True
        from gpfm.models.custom import load_entry_point_plugins

        load_entry_point_plugins()


def list_encoders() -> list[str]:
    """Names of all registered encoders (plugins included), sorted."""
    _load_plugins()
    return ENCODERS.names()


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registry entry for ``name``; ``timm:<model>`` builds one for any timm model, ``pretrained:<folder>``
    reads an export folder (raises when unknown)."""
    from gpfm.models.custom import TIMM_PREFIX, timm_spec
    from gpfm.models.exported import PRETRAINED_PREFIX, exported_spec

    _load_plugins()
    if name.startswith(TIMM_PREFIX) and name not in ENCODERS:
        register_encoder(timm_spec(name))
    if name.startswith(PRETRAINED_PREFIX):  # read afresh: the folder may have been re-exported since
        return exported_spec(name[len(PRETRAINED_PREFIX):], name=name)
    return ENCODERS.get(name)
