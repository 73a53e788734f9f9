"""Encoders exported by ``gpfm pretrain-export``, named ``pretrained:<export folder>``.

An export folder holds ``config.json`` (the ViT's shape and provenance) and ``teacher_checkpoint.pth`` (the EMA
teacher in the GPFM release layout); :func:`exported_spec` turns it into an :class:`EncoderSpec` whose weights
are found in the folder, so ``create_encoder("pretrained:runs/x/export")``, ``gpfm embed -e pretrained:...``,
``gpfm extract`` and ``gpfm bench`` take a student trained here like any catalogued encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpfm.errors import GpfmError
from gpfm.models.checkpoints import gpfm_to_timm
from gpfm.models.spec import EncoderSpec, Preprocess
from gpfm.models.vit import ViTConfig, build_vit, vit_cls_tokens
from gpfm.weights import WeightSource

PRETRAINED_PREFIX = "pretrained:"
FORMAT_A_FILE = "teacher_checkpoint.pth"
FORMAT_B_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def exported_spec(folder: str | Path, name: str | None = None) -> EncoderSpec:
    """The spec of the encoder exported in ``folder`` (raises a one-line error naming what is missing)."""
    folder = Path(folder)
    config = folder / CONFIG_FILE
    if not config.is_file() or not (folder / FORMAT_A_FILE).is_file():
        raise GpfmError(f"{folder}: not a gpfm pretrain-export folder (needs {CONFIG_FILE} and {FORMAT_A_FILE}); "
                        "run `gpfm pretrain-export CHECKPOINT OUT_DIR` first")
    try:
        info = json.loads(config.read_text())
        vit_cfg = ViTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["vit"].items()})
    except (ValueError, KeyError, TypeError) as exc:
        raise GpfmError(f"{config}: unreadable export config ({type(exc).__name__}: {exc}); re-run "
                        "gpfm pretrain-export") from exc
    weights = str((folder / FORMAT_A_FILE).resolve())
    return EncoderSpec(
        name=name or f"{PRETRAINED_PREFIX}{folder}",
        architecture=f"ViT {vit_cfg.embed_dim}x{vit_cfg.depth}/{vit_cfg.patch_size} exported EMA teacher",
        build=lambda: build_vit(vit_cfg),
        convert_state_dict=gpfm_to_timm,
        forward_tokens=vit_cls_tokens,
        embed_dim=vit_cfg.embed_dim,
        token_dim=vit_cfg.embed_dim,
        patch_size=vit_cfg.patch_size,
        num_prefix_tokens=vit_cfg.num_prefix_tokens,
        pooling="cls",
        preprocess=Preprocess(input_size=vit_cfg.img_size, interpolation="bicubic", resize="direct"),
        weights=WeightSource(env_var="GPFM_PRETRAINED_WEIGHTS", license="as the training data allows",
                             packaged=lambda: weights,
                             notes=f"the weights are {weights} (written by gpfm pretrain-export)"),
        description=f"EMA teacher exported by gpfm pretrain-export (iteration {info.get('iteration', '?')})",
    )
