"""The small training loop shared by the report and VQA models: AdamW, epochs, val-based early stopping.

Each epoch runs the loss over shuffled mini-batches, then scores the validation split (higher is better;
BLEU-4 for reports, accuracy for VQA). The best-scoring epoch's weights are restored at the end; training
stops after ``patience`` epochs without improvement. The test split is never seen here.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class TrainConfig:
    """Optimisation settings (pinned by each protocol's Config)."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-2
    patience: int = 6
    grad_clip: float = 1.0
    warmup_epochs: int = 1
    seed: int = 0


@dataclass
class FitResult:
    """What training did: the chosen epoch and its val score, curves, wall time."""

    best_epoch: int
    best_val: float
    epochs_run: int
    seconds: float
    curves: dict[str, list[float]] = field(default_factory=dict)


def fit(
    model: nn.Module,
    n_train: int,
    batch_loss: Callable[[Sequence[int]], Tensor],
    val_score: Callable[[], float | tuple[float, ...]],
    cfg: TrainConfig,
) -> FitResult:
    """Train ``model`` in place and restore its best-validation weights.

    Args:
        model: the module to train (its parameters are optimised).
        n_train: number of training items; mini-batches are index lists into them.
        batch_loss: indices → scalar loss (the model in train mode).
        val_score: validation score of the current weights (called in eval mode; higher is better). A
            tuple is compared lexicographically (later entries break ties of the first, which is the one
            recorded in the curves and as ``best_val``).
        cfg: optimisation settings.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch

    def lr_factor(step: int) -> float:  # linear warmup then cosine to 0 over the scheduled epochs
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    curves: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_metric": []}
    best_key: tuple[float, ...] = (-math.inf,)
    best_epoch, best_state, stale = -1, copy.deepcopy(model.state_dict()), 0
    start = time.perf_counter()
    epoch = -1
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(n_train)
        losses = []
        for i in range(0, n_train, cfg.batch_size):
            loss = batch_loss(order[i : i + cfg.batch_size].tolist())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch}; lower the learning rate"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        model.eval()
        raw = val_score()
        key = tuple(float(v) for v in raw) if isinstance(raw, tuple) else (float(raw),)
        score = key[0]
        curves["epoch"].append(epoch)
        curves["train_loss"].append(float(np.mean(losses)))
        curves["val_metric"].append(score)
        if key > best_key:
            best_key, best_epoch, best_state, stale = key, epoch, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, best_key[0], epoch + 1, time.perf_counter() - start, curves)


def describe(result: FitResult) -> dict[str, Any]:
    """Provenance entry for a result JSON."""
    return {
        "best_epoch": result.best_epoch,
        "best_val": result.best_val,
        "epochs_run": result.epochs_run,
        "train_seconds": round(result.seconds, 3),
    }
