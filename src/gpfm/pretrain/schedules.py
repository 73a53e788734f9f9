"""Per-iteration schedules of UNKD pretraining: LR, WD, EMA momentum, τ_T.

Every schedule is a closed-form function of the iteration over the FULL horizon (GPFM: 400 × 1,250 = 500,000
iterations), so stopping early with ``stop_at_iteration`` (the release stops at 87,500) leaves the values
unchanged. A schedule has three phases:

* freeze: ``value(t) = 0`` for ``t < freeze_iters`` (the "last layer" LR);
* warm-up: ``value(t) = start + (base − start) · (t − f) / W`` for ``f ≤ t < f + W``;
* cosine: ``value(t) = final + ½ (base − final) (1 + cos(π · p))`` with
  ``p = (t − f − W) / (T − f − W)`` clipped to [0, 1] (so ``value(T) = final`` and beyond).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpfm.pretrain.config import PretrainConfig


@dataclass(frozen=True)
class CosineSchedule:
    """Freeze → linear warm-up → half-cosine, evaluated at any iteration.

    Attributes:
        base_value: value at the end of the warm-up (peak LR, initial WD, ...).
        final_value: value at ``total_iters``.
        total_iters: horizon of the cosine (the full run).
        warmup_iters: linear warm-up length.
        start_warmup_value: value at the start of the warm-up.
        freeze_iters: leading iterations with value 0.
    """

    base_value: float
    final_value: float
    total_iters: int
    warmup_iters: int = 0
    start_warmup_value: float = 0.0
    freeze_iters: int = 0

    def __call__(self, iteration: int) -> float:
        """Value at ``iteration`` (0-based)."""
        t = iteration
        if t < self.freeze_iters:
            return 0.0
        t -= self.freeze_iters
        if t < self.warmup_iters:
            return (
                self.start_warmup_value + (self.base_value - self.start_warmup_value) * t / self.warmup_iters
            )
        t -= self.warmup_iters
        span = self.total_iters - self.freeze_iters - self.warmup_iters
        progress = 1.0 if span <= 0 else min(max(t / span, 0.0), 1.0)
        return self.final_value + 0.5 * (self.base_value - self.final_value) * (
            1.0 + math.cos(math.pi * progress)
        )


@dataclass(frozen=True)
class Schedules:
    """All schedules of a run.

    Attributes:
        lr: learning rate of the parameter groups (before their multipliers).
        last_layer_lr: ``lr`` with the first ``freeze_last_layer_epochs`` at 0 (``last_layer`` params).
        weight_decay: weight decay (before per-group multipliers).
        momentum: EMA teacher momentum.
        teacher_temp: teacher softmax temperature τ_T.
    """

    lr: CosineSchedule
    last_layer_lr: _FrozenPrefix
    weight_decay: CosineSchedule
    momentum: CosineSchedule
    teacher_temp: CosineSchedule

    def values(self, iteration: int) -> dict[str, float]:
        """Every schedule at ``iteration`` (logged under these names)."""
        return {
            "lr": self.lr(iteration),
            "last_layer_lr": self.last_layer_lr(iteration),
            "wd": self.weight_decay(iteration),
            "mom": self.momentum(iteration),
            "teacher_temp": self.teacher_temp(iteration),
        }


@dataclass(frozen=True)
class _FrozenPrefix:
    """``inner(t)``, but 0 for ``t < freeze_iters`` (dinov2's last-layer rule; the curve is not shifted)."""

    inner: CosineSchedule
    freeze_iters: int

    def __call__(self, iteration: int) -> float:
        return 0.0 if iteration < self.freeze_iters else self.inner(iteration)


def peak_lr(cfg: PretrainConfig, world_size: int) -> float:
    """Peak LR: ``base_lr · √(global batch / 1024)`` under ``sqrt_1024`` (GPFM: 4e-4·√1.5 ≈ 4.90e-4)."""
    if cfg.optim.lr_scaling == "none":
        return cfg.optim.base_lr
    return cfg.optim.base_lr * math.sqrt(cfg.data.batch_size_per_gpu * world_size / 1024.0)


def build_schedules(cfg: PretrainConfig, world_size: int = 1) -> Schedules:
    """The run's schedules from its config (horizon = ``epochs × iters_per_epoch``).

    Args:
        cfg: resolved config.
        world_size: number of processes (enters the LR through the global batch).
    """
    o = cfg.optim
    total = o.total_iters
    lr = CosineSchedule(
        peak_lr(cfg, world_size), o.min_lr, total, warmup_iters=o.warmup_epochs * o.iters_per_epoch
    )
    return Schedules(
        lr=lr,
        last_layer_lr=_FrozenPrefix(lr, o.freeze_last_layer_epochs * o.iters_per_epoch),
        weight_decay=CosineSchedule(o.weight_decay, o.weight_decay_end, total),
        momentum=CosineSchedule(o.momentum_teacher, o.final_momentum_teacher, total),
        teacher_temp=CosineSchedule(
            cfg.ssl.teacher_temp,
            cfg.ssl.teacher_temp,
            total,
            warmup_iters=cfg.ssl.warmup_teacher_temp_iters,
            start_warmup_value=cfg.ssl.warmup_teacher_temp,
        ),
    )
