"""Mean- and max-pooling MIL baselines: a shared instance trunk, one pooling, a linear head.

``h_i = Dropout(ReLU(W_1 x_i))`` (D → ``hidden``, the ABMIL trunk, so the aggregation is the only difference),
``z = mean_i h_i`` or ``z = max_i h_i`` (per channel), logits ``W_2 z``. With ``hidden=0`` the trunk is
skipped
and the head is linear on pooled raw features.

Instance saliency (the ``attention`` output, for heatmaps): for mean pooling the share of each instance in
the predicted class' logit, ``softmax_i(W_2[k] h_i)``; for max pooling the fraction of channels an instance
wins (its count in the channel-wise argmax, divided by the width).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gpfm.eval.mil.registry import AGGREGATORS, MILOutput


class PoolMIL(nn.Module):
    """Mean or max pooling of (optionally projected) instances followed by a linear head.

    Args:
        in_dim: instance feature size D.
        n_outputs: bag outputs K.
        mode: ``mean`` or ``max``.
        hidden: trunk width (0 = no trunk).
        dropout: dropout after the trunk ReLU.
    """

    def __init__(
        self, in_dim: int, n_outputs: int, mode: str = "mean", hidden: int = 512, dropout: float = 0.25
    ) -> None:
        super().__init__()
        if mode not in ("mean", "max"):
            raise ValueError(f"pooling mode {mode!r} is unknown; use 'mean' or 'max'")
        self.mode = mode
        self.trunk = (
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
            if hidden
            else nn.Identity()
        )
        self.head = nn.Linear(hidden or in_dim, n_outputs)

    def forward(self, x: Tensor) -> MILOutput:
        """Bag (N, D) → logits (K,) and instance saliency (N,)."""
        if x.dim() == 3 and x.shape[0] == 1:
            x = x[0]
        h = self.trunk(x)
        if self.mode == "mean":
            logits = self.head(h.mean(0))
            with torch.no_grad():
                k = int(logits.argmax())
                saliency = torch.softmax(h @ self.head.weight[k], dim=0)
        else:
            pooled, winner = h.max(0)
            logits = self.head(pooled)
            with torch.no_grad():
                saliency = torch.bincount(winner, minlength=h.shape[0]).to(h.dtype) / h.shape[1]
        return MILOutput(logits, saliency)


@AGGREGATORS.register("meanpool")
def meanpool(in_dim: int, n_outputs: int, **kwargs) -> PoolMIL:
    """Mean pooling + linear head."""
    return PoolMIL(in_dim, n_outputs, mode="mean", **kwargs)


@AGGREGATORS.register("maxpool")
def maxpool(in_dim: int, n_outputs: int, **kwargs) -> PoolMIL:
    """Max pooling + linear head."""
    return PoolMIL(in_dim, n_outputs, mode="max", **kwargs)
