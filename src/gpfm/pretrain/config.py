"""Typed configuration of a UNKD pretraining run (unkd-pretraining.md), with YAML and ``a.b=value`` overrides.

The dataclass defaults ARE the faithful GPFM ViT-L/14 release (``distill_vitl14_192M_exclude_split1``,
every switch at its [F] value; the schema is in :mod:`gpfm.pretrain.config_schema`). A YAML
file holds only overrides, optionally starting from a named preset (``preset: tiny_cpu``); unknown keys are
errors that name the key and the valid ones.

Example:
    >>> cfg = load_config(None, ["optim.base_lr=1e-3", "data.batch_size_per_gpu=8"], preset="tiny_cpu")
    >>> cfg.optim.base_lr
    0.001
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from gpfm.pretrain.config_schema import (  # noqa: F401  (the schema is part of this module's API)
    ConfigError,
    DataConfig,
    DistillConfig,
    ExpertConfig,
    HeadsConfig,
    OptimConfig,
    PretrainConfig,
    SSLConfig,
    StudentConfig,
    TrainConfig,
)

# Allowed values of every string switch; checked by :func:`validate`.
CHOICES: dict[str, tuple[str, ...]] = {
    "student.ffn": ("mlp", "swiglu"),
    "heads.distill_head": ("shared_dinohead_1layer", "separate_mlp"),
    "ssl.centering": ("softmax_center", "sinkhorn_knopp"),
    "distill.expert_norm": ("shared_imagenet", "per_expert"),
    "distill.conch_target": ("proj_contrast", "pooled_no_proj"),
    "distill.conch_patch": ("none", "trunk_tokens"),
    "distill.expert_patch_tokens": ("all", "unmasked_only", "extra_unmasked_pass"),
    "distill.align": ("teacher_bicubic_up", "student_down"),
    "distill.align_dtype": ("fp16", "fp32"),
    "distill.teacher_feature_norm": ("none", "ema_zscore"),
    "distill.cls_loss": ("cosine", "kl"),
    "distill.expert_view": ("augmented", "clean"),
    "distill.expert_targets": ("live", "cached"),
    "distill.expert_cache_dtype": ("fp16", "fp32"),
    "data.source": ("folder", "slides"),
    "data.blur_semantics": ("dinov2_inverted", "intended"),
    "data.aug_preset": ("dinov2", "pathology"),
    "optim.lr_scaling": ("sqrt_1024", "none"),
    "optim.clip_scope": ("backbone_and_dino_head", "all_trainable"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.parallel": ("ddp", "fsdp2"),
}


def _tiny_cpu_overrides() -> dict[str, Any]:
    # A 6-block ViT-tiny/16 student on 96/48 px crops (6x6 and 3x3 grids): seconds per step on 2 CPU cores.
    # Small-scale recipe (experiments/unkd_evidence): with GPFM's LayerScale 1e-5 a tiny randomly initialised ViT
    # gives every image nearly the same CLS (pairwise cosine 0.996 after 100 steps), the centred teacher logits
    # differ by ~0.001 across images (≪ τ_T) and the DINO teacher is uniform (entropy = ln K) within ~20 steps.
    # LayerScale 1 lets the blocks shape the CLS from step 0; Sinkhorn-Knopp centring with a constant τ_T = 0.02
    # keeps the teacher sharp and spread over prototypes (entropy ≈ 0.85-0.9 ln K over 400 steps, never ln K).
    return {
        "student": {
            "arch": "vit_tiny",
            "depth": 6,
            "patch_size": 16,
            "drop_path_rate": 0.1,
            "layerscale": 1.0,
        },
        "heads": {
            "dino_out_dim": 1024,
            "dino_hidden_dim": 256,
            "dino_bottleneck_dim": 64,
            "distill_bottleneck_dim": 64,
        },
        "ssl": {
            "centering": "sinkhorn_knopp",
            "teacher_temp": 0.02,
            "warmup_teacher_temp": 0.02,
            "warmup_teacher_temp_iters": 20,
        },
        "distill": {
            "experts": [
                {
                    "name": "efficientnet-lite0-imagenet",
                    "weights": None,
                    "cls_weight": 1.0,
                    "patch_weight": 0.25,
                }
            ],
            "align_dtype": "fp32",
        },
        "data": {
            "root": "../shared/data/patches/lc25000_lung_224",
            "batch_size_per_gpu": 8,
            "num_workers": 0,
            "global_crops_size": 96,
            "local_crops_size": 48,
            "local_crops_number": 2,
        },
        "optim": {
            "base_lr": 5e-4,
            "lr_scaling": "none",
            "epochs": 10,
            "iters_per_epoch": 10,
            "warmup_epochs": 1,
            "freeze_last_layer_epochs": 0,
            "layerwise_decay": 1.0,
        },
        "train": {
            "output_dir": "runs/pretrain_tiny",
            "precision": "fp32",
            "stop_at_iteration": None,
            "checkpoint_every": 50,
            "teacher_checkpoint_every": 0,
            "log_every": 1,
        },
    }


PRESETS: dict[str, typing.Callable[[], dict[str, Any]]] = {
    "gpfm_vitl14": dict,  # the dataclass defaults are the faithful release
    "tiny_cpu": _tiny_cpu_overrides,
}


def preset_config(name: str) -> PretrainConfig:
    """The named preset (``gpfm_vitl14`` faithful release, ``tiny_cpu``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return merge(PretrainConfig(), PRESETS[name](), where=f"preset {name}")


def merge(cfg: Any, overrides: dict[str, Any], where: str = "config") -> Any:
    """Return a copy of dataclass ``cfg`` with nested ``overrides`` applied (unknown keys raise)."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(overrides).__name__}")
    names = {f.name for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(names))}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge(current, value, where=f"{where}.{key}")
        else:
            changes[key] = _coerce(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(cfg, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type (lists → tuples, ints → floats, dicts → dataclasses)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return merge(hint(), value, where) if isinstance(value, dict) else _fail(value, hint, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            _fail(value, hint, where)
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            _fail(value, hint, where)
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, str) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    return _fail(value, hint, where)


def _fail(value: Any, hint: Any, where: str) -> Any:
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: expected {name}, got {value!r}")


def parse_override(text: str) -> dict[str, Any]:
    """``optim.lr=1e-3`` → ``{"optim": {"lr": 0.001}}`` (the value is parsed as YAML).

    List items are addressed by index: ``distill.experts.0.cls_weight=0``.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE; e.g. optim.base_lr=1e-3")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)  # YAML 1.1 reads "1e-3" as a string
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _looks_numeric(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _apply_override(cfg: PretrainConfig, text: str) -> PretrainConfig:
    tree = parse_override(text)
    path = text.split("=", 1)[0].strip().split(".")
    # list indexing (distill.experts.0.cls_weight): rebuild the list with the one item changed
    for i, part in enumerate(path):
        if part.isdigit():
            parent = _get(cfg, path[:i])
            if not isinstance(parent, list) or int(part) >= len(parent):
                raise ConfigError(f"override {text!r}: {'.'.join(path[:i])} has no item {part}")
            items = list(parent)
            items[int(part)] = merge(
                items[int(part)],
                parse_override(".".join(path[i + 1 :]) + "=" + text.split("=", 1)[1]),
                where=text,
            )
            return _set(cfg, path[:i], items)
    return merge(cfg, tree, where=f"override {text!r}")


def _get(obj: Any, path: list[str]) -> Any:
    for part in path:
        if not hasattr(obj, part):
            raise ConfigError(f"unknown config key {'.'.join(path)!r}")
        obj = getattr(obj, part)
    return obj


def _set(cfg: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(cfg, **{path[0]: value})
    return dataclasses.replace(cfg, **{path[0]: _set(getattr(cfg, path[0]), path[1:], value)})


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: typing.Sequence[str] = (),
    preset: str | None = None,
) -> PretrainConfig:
    """Resolve a run config: preset (or the YAML's ``preset:``) → YAML overrides → ``key=value`` overrides.

    Args:
        path: YAML file of overrides (may start with ``preset: NAME``), or None.
        overrides: ``a.b=value`` strings applied last.
        preset: preset to start from when the YAML names none (default: the faithful ``gpfm_vitl14``).

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or invalid choice (the message names it).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc}); pass a readable YAML file") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (student, data, ...)")
    data = dict(data)
    cfg = preset_config(data.pop("preset", None) or preset or "gpfm_vitl14")
    cfg = merge(cfg, data, where=str(path or "config"))
    for text in overrides:
        cfg = _apply_override(cfg, text)
    validate(cfg)
    return cfg


def validate(cfg: PretrainConfig) -> None:
    """Check every choice and range; raise :class:`ConfigError` naming the key."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key.split("."))
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not supported; choose one of {', '.join(allowed)}")
    names = [e.name for e in cfg.distill.experts]
    if len(set(names)) != len(names):
        raise ConfigError(f"distill.experts lists an expert twice ({names}); give each expert once")
    if cfg.data.batch_size_per_gpu < 2:
        raise ConfigError(
            "data.batch_size_per_gpu must be ≥ 2 (KoLeo needs a nearest neighbour in the batch)"
        )
    if cfg.optim.warmup_epochs > cfg.optim.epochs:
        raise ConfigError("optim.warmup_epochs must not exceed optim.epochs")
    stop = cfg.train.stop_at_iteration
    if stop is not None and not 0 < stop <= cfg.optim.total_iters:
        raise ConfigError(f"train.stop_at_iteration={stop} must lie in (0, {cfg.optim.total_iters}]")
    if cfg.distill.expert_targets == "cached" and cfg.distill.expert_view != "clean":
        raise ConfigError(
            "distill.expert_targets=cached needs distill.expert_view=clean (the experts' view of a tile must not "
            "change from step to step); set distill.expert_view=clean or distill.expert_targets=live"
        )
    if cfg.distill.expert_cache_size < 0:
        raise ConfigError("distill.expert_cache_size must be ≥ 0 (0: each expert's own input size)")
    for size, name in ((cfg.data.global_crops_size, "global"), (cfg.data.local_crops_size, "local")):
        if size % cfg.student.patch_size:
            raise ConfigError(
                f"data.{name}_crops_size={size} is not a multiple of the patch size {cfg.student.patch_size}"
            )


def total_steps(cfg: PretrainConfig) -> int:
    """Iterations this run executes (``stop_at_iteration`` or the full schedule)."""
    return cfg.train.stop_at_iteration or cfg.optim.total_iters


def dump_yaml(cfg: PretrainConfig) -> str:
    """The fully resolved config as YAML (written next to every run)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
