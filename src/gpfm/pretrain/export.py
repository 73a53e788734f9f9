"""Export the EMA teacher backbone as a GPFM-format encoder (encoders-and-checkpoints.md).

An export folder holds:

* ``teacher_checkpoint.pth`` — format A,
  ``{"teacher": {"backbone.blocks.<chunk>.<i>.*", "backbone.mask_token",
  "dino_head.*"}}`` as the GPFM release circulates (:func:`gpfm.models.checkpoints.timm_to_gpfm_teacher`);
* ``model.safetensors`` — format B, the timm state dict (no mask token, no head);
* ``config.json`` — the :class:`~gpfm.models.vit.ViTConfig` and provenance (iteration, run config).

A ViT-L/14 export loads strictly with ``create_encoder("gpfm", weights=<dir>/teacher_checkpoint.pth)``; any
size loads with :func:`load_exported_encoder`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from gpfm.atomic import write_json_atomic
from gpfm.models.checkpoints import (
    gpfm_to_timm,
    save_safetensors_atomic,
    save_torch_atomic,
    timm_to_gpfm_teacher,
)
from gpfm.models.exported import CONFIG_FILE, FORMAT_A_FILE, FORMAT_B_FILE  # noqa: F401 (decided there)
from gpfm.models.vit import ViTConfig


def _encoder_vit_config(cfg: ViTConfig) -> ViTConfig:
    # the exported encoder runs at its training size, without drop path or dynamic resizing (as GPFM)
    return dataclasses.replace(cfg, drop_path_rate=0.0, dynamic_img_size=False)


def export_from_state(
    teacher_backbone: dict[str, torch.Tensor],
    dino_head: dict[str, torch.Tensor],
    vit_cfg: ViTConfig,
    out_dir: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write formats A, B and ``config.json`` from a teacher backbone state dict (timm keys + mask_token)."""
    out = Path(out_dir)
    sd = {k: v.detach().float().cpu().contiguous() for k, v in teacher_backbone.items()}
    mask_token = sd.pop("mask_token", None)
    head = {k: v.detach().float().cpu().contiguous() for k, v in dino_head.items()}
    # chunks=4 as the release's FSDP units (6 blocks each for ViT-L); smaller models use ≤ depth chunks
    fmt_a = timm_to_gpfm_teacher(
        sd, chunks=min(4, vit_cfg.depth), depth=vit_cfg.depth, mask_token=mask_token, dino_head=head
    )
    save_torch_atomic(fmt_a, out / FORMAT_A_FILE)
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    save_safetensors_atomic(sd, out / FORMAT_B_FILE, metadata={"format": "timm", **meta})
    enc_cfg = _encoder_vit_config(vit_cfg)
    write_json_atomic(
        out / CONFIG_FILE,
        {
            "architecture": "gpfm.models.vit.ViT",
            "vit": dataclasses.asdict(enc_cfg),
            "embed_dim": enc_cfg.embed_dim,
            "pooling": "cls",
            "files": {"format_a": FORMAT_A_FILE, "format_b": FORMAT_B_FILE},
            **(metadata or {}),
        },
    )
    return out


def _full(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # FSDP2 shards are DTensors: gather the full tensor (a collective every rank must join)
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}


def export_teacher(meta, out_dir: str | Path, iteration: int | None = None, write: bool = True) -> Path:
    """Export the EMA teacher of a live :class:`~gpfm.pretrain.meta_arch.MetaArch`.

    Under FSDP2 every rank must call this (the shards are gathered); only ranks with ``write`` write files.
    """
    teacher = meta.teacher
    backbone, head = _full(teacher.backbone.state_dict()), _full(teacher.dino_head.state_dict())
    if not write:
        return Path(out_dir)
    return export_from_state(backbone, head, meta.student.vit_cfg, out_dir, metadata={"iteration": iteration})


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Export the EMA teacher stored in a full training checkpoint (``gpfm pretrain-export``).

    Raises:
        ValueError: not a gpfm pretraining checkpoint.
    """
    from gpfm.pretrain.checkpoint import load_checkpoint
    from gpfm.pretrain.config import PretrainConfig, merge
    from gpfm.pretrain.student import student_vit_config

    state = load_checkpoint(checkpoint)
    cfg = merge(PretrainConfig(), state["config"], where=f"{checkpoint} config")
    model = state["model"]
    backbone = {
        k.removeprefix("teacher.backbone."): v for k, v in model.items() if k.startswith("teacher.backbone.")
    }
    head = {
        k.removeprefix("teacher.dino_head."): v
        for k, v in model.items()
        if k.startswith("teacher.dino_head.")
    }
    if not backbone:
        raise ValueError(f"{checkpoint}: no teacher backbone in the checkpoint")
    return export_from_state(
        backbone,
        head,
        student_vit_config(cfg),
        out_dir,
        metadata={"iteration": state["iteration"], "source_checkpoint": str(checkpoint)},
    )


def load_exported_encoder(
    export_dir: str | Path, device: str | torch.device | None = "cpu", precision: str | None = "fp32"
):
    """Build the ViT described by ``config.json`` and load the format-A teacher strictly → :class:`Encoder`.

    The same as ``create_encoder("pretrained:<export_dir>")`` (:mod:`gpfm.models.exported`).

    Args:
        export_dir: folder written by :func:`export_teacher` / :func:`export_checkpoint`.
        device: where to put the encoder.
        precision: ``fp32``/``bf16``/None (hardware default).
    """
    from gpfm.models import create_encoder
    from gpfm.models.exported import exported_spec

    spec = exported_spec(export_dir, name=f"pretrained:{Path(export_dir).name}")
    return create_encoder(spec, weights=spec.weights.packaged(), device=device, precision=precision, verbose=False)
