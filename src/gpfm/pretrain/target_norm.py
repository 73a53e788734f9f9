"""Expert target normalisation (``distill.teacher_feature_norm``): raw targets, or running per-channel z-scores.

Raw-scale targets let the expert with the largest feature variance dominate the SmoothL1 part of the patch loss
(and any scale-sensitive CLS loss). ``ema_zscore`` (as in UNIC, Sariyildiz et al. 2024) standardises every
channel of every expert target with running statistics kept separately for the CLS and the patch targets::

    t̂ = (t − μ) / √(σ² + ε)              ε = 1e-6, per channel (the last axis)
    μ ← (1 − m_k)·μ + m_k·mean_batch(t)    σ² ← (1 − m_k)·σ² + m_k·var_batch(t)
    m_k = max(1/k, m_min)                   k = number of updates so far (1, 2, …), m_min = 0.001

So the first batch sets the statistics, the first 1/m_min = 1,000 updates average them exactly, and from then on
they are an EMA with momentum 0.001 ("1.0 → 0.001"). Batch statistics are all-reduced over processes, so every
rank normalises identically; the statistics are buffers, saved in checkpoints (resume stays bit-exact). They are
updated only in training mode; ``none`` is the identity (the GPFM release).
"""

from __future__ import annotations

import torch
from torch import nn

from gpfm.pretrain.losses._centering import all_reduce_

EPS = 1e-6
MIN_MOMENTUM = 1e-3


class EMAZScore(nn.Module):
    """Per-channel running z-score of (…, D) targets (see the module docstring)."""

    def __init__(self, dim: int, min_momentum: float = MIN_MOMENTUM, eps: float = EPS) -> None:
        super().__init__()
        self.min_momentum, self.eps = min_momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, target: torch.Tensor) -> None:
        """Fold one batch (all processes) into the running statistics."""
        flat = target.detach().float().reshape(-1, target.shape[-1])
        n = all_reduce_(torch.tensor(float(flat.shape[0]), device=flat.device))
        if float(n) == 0:
            return
        mean = all_reduce_(flat.sum(dim=0)) / n
        var = all_reduce_(((flat - mean) ** 2).sum(dim=0)) / n
        self.count += 1
        m = max(1.0 / float(self.count), self.min_momentum)
        self.mean.mul_(1 - m).add_(mean, alpha=m)
        self.var.mul_(1 - m).add_(var, alpha=m)

    def forward(self, target: torch.Tensor) -> torch.Tensor:
        """Normalised targets (fp32); updates the statistics first in training mode."""
        if self.training:
            self.update(target)
        return (target.float() - self.mean) / torch.sqrt(self.var + self.eps)


def build_target_norms(mode: str, dims: dict[str, tuple[int, int]]) -> nn.ModuleDict:
    """``{<expert>_cls, <expert>_patch: EMAZScore}`` for ``ema_zscore``; empty for ``none``.

    Args:
        mode: ``none`` or ``ema_zscore``.
        dims: expert name → (CLS dim, patch dim); a 0 dim means that target is not distilled.
    """
    norms = nn.ModuleDict()
    if mode == "none":
        return norms
    if mode != "ema_zscore":
        raise ValueError(f"distill.teacher_feature_norm {mode!r} unknown; use none or ema_zscore")
    for name, (cls_dim, patch_dim) in dims.items():
        if cls_dim:
            norms[f"{name}_cls"] = EMAZScore(cls_dim)
        if patch_dim:
            norms[f"{name}_patch"] = EMAZScore(patch_dim)
    return norms
