"""Encoders that are not in gpfm's catalogue: any timm model by name, and a lab's own models via entry points.

* ``timm:<model_name>`` — any timm architecture (``timm:resnet18``, ``timm:vit_small_patch16_224``...) built without
  downloading anything; its weights come from ``weights=PATH`` (a timm-layout state dict, ``.safetensors`` or
  ``.pth``) or ``weights="random"``. The embedding is timm's pooled pre-logits feature
  (``forward_head(forward_features(x), pre_logits=True)``); the input size and mean/std come from the model's
  timm pretrained config. It works wherever an encoder name is accepted: ``gpfm extract``, ``embed``, ``bench``,
  and as a pretraining expert.
* **Entry points** — a package that declares, in its ``pyproject.toml``::

      [project.entry-points."gpfm.encoders"]
      my_lab = "my_lab.gpfm_plugin:register"

  has ``register()`` called once, on the first lookup of the encoder registry; it registers its encoders with
  :func:`gpfm.models.register_encoder`, exactly as the files of ``gpfm/models/encoders/`` do. A broken plugin is
  reported in one line naming it, never a silent omission.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gpfm.errors import GpfmError
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, TokenOutput
from gpfm.weights import WeightSource

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
ENTRY_POINT_GROUP = "gpfm.encoders"


class PluginError(GpfmError):
    """An encoder plugin (entry point) failed to load or register."""


def _pooled_tokens(model: nn.Module, images: torch.Tensor) -> TokenOutput:
    """Pooled pre-logits as the embedding; the spatial tokens as patch tokens when the model has them.

    A CNN's ``forward_features`` is a (B, C, h, w) map (its cells are the tokens); a ViT's is (B, prefix + h·w, D)
    (the prefix tokens are dropped). Other shapes give no patch tokens.
    """
    feats = model.forward_features(images)
    pooled = model.forward_head(feats, pre_logits=True)
    if feats.ndim == 4:
        b, c, h, w = feats.shape
        return TokenOutput(cls=pooled, patch=feats.flatten(2).transpose(1, 2), grid=(h, w), pooled=pooled)
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    n = feats.shape[1] - prefix if feats.ndim == 3 else 0
    side = int(round(n**0.5))
    if n and side * side == n:
        return TokenOutput(cls=pooled, patch=feats[:, prefix:], grid=(side, side), pooled=pooled)
    return TokenOutput(cls=pooled, patch=None, grid=None, pooled=pooled)


def _convert(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    sd, _ = unwrap_timm_state_dict(ckpt)
    return {k: v for k, v in sd.items() if not k.startswith(("head.fc.", "fc.", "classifier.", "head.weight",
                                                             "head.bias"))}, "timm"


def timm_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` of ``timm:<model_name>`` (raises a one-line error for an unknown model)."""
    import timm

    model_name = name[len(TIMM_PREFIX):]
    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:5]
        raise GpfmError(f"{name}: timm has no model {model_name!r}" + (f" (similar: {', '.join(close)})" if close
                                                                     else "") + "; see timm.list_models()")

    def build() -> nn.Module:
        return timm.create_model(model_name, pretrained=False, num_classes=0)

    probe = build()
    cfg = probe.pretrained_cfg or {}
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    mean = tuple(cfg.get("mean") or (0.485, 0.456, 0.406))
    std = tuple(cfg.get("std") or (0.229, 0.224, 0.225))
    with torch.inference_mode():  # one forward of the random model tells whether it has spatial tokens
        tokens = _pooled_tokens(probe.eval(), torch.zeros(1, 3, size, size))
    token_dim = None if tokens.patch is None else int(tokens.patch.shape[-1])
    stride = None if tokens.grid is None else size // tokens.grid[0]
    return EncoderSpec(
        name=name, architecture=f"timm {model_name}", build=build, convert_state_dict=_convert,
        forward_tokens=_pooled_tokens, embed_dim=int(probe.num_features), token_dim=token_dim, patch_size=stride,
        num_prefix_tokens=0, pooling="pooled",
        preprocess=Preprocess(input_size=size, mean=mean, std=std, interpolation="bicubic", norm_name="timm"),
        weights=WeightSource(env_var="GPFM_TIMM_WEIGHTS", license="as the weights file's source says",
                             notes="pass the weights file of this timm model with --weights (timm state-dict layout)"),
        half_precision_ok=frozenset(), is_pathology=False,
        description=f"any timm model: {model_name} (pooled pre-logits features)")


def load_entry_point_plugins() -> list[str]:
    """Call every ``gpfm.encoders`` entry point's ``register()``; returns their names."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
            if callable(target):
                target()
        except Exception as exc:  # noqa: BLE001 - a third party's error, reported with its name
            raise PluginError(f"encoder plugin {ep.name!r} ({ep.value}) failed: {type(exc).__name__}: {exc}; fix or "
                              "uninstall the package that provides it") from exc
        loaded.append(ep.name)
    if loaded:
        log.info("encoder plugins loaded: %s", ", ".join(loaded))
    return loaded
