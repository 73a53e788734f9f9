r"""Discrete-time survival: quantile time bins and the negative log-likelihood of Zadeh & Schmid (2020).

**Bins**. ``n_bins`` (default 4) quantile bins of the survival time of the
**uncensored** cases, one row per case. Every case, censored or not, gets the left-closed bin
``[edge_k, edge_{k+1})`` its time falls in.

* ``rule="train"`` [I] (default): quantiles of the training fold only, outer edges 0 and +∞, so every
  validation/test case falls in a bin.
* ``rule="cohort"`` [F] (GPFM ``datasets/dataset_survival.py``): quantiles of the whole cohort, outer edges
  the cohort's minimum time − 1e-6 and maximum time + 1e-6.

**Loss.** For model outputs ``f`` (B, K), hazards ``h_j = σ(f_j)``, survival ``S_j = Π_{i≤j} (1 − h_i)`` with
``S_{-1} = 1``; for a case in bin ``y`` with censorship ``c`` (1 = censored):

.. math::
    L_{unc} = -(1-c)\,[\log S_{y-1} + \log h_y],\quad L_{cen} = -c\,\log S_y,\quad
    L = (1-α)(L_{unc} + L_{cen}) + α L_{unc}

with probabilities clamped at ``eps`` = 1e-7 before the log, averaged over the batch. GPFM trains with
α = 0 (the pinned default here). The risk score is ``−Σ_j S_j`` (higher = shorter expected survival).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn


@dataclass(frozen=True)
class TimeBins:
    """Left-closed time bins: bin k is ``[edges[k], edges[k+1])``.

    Attributes:
        edges: (n_bins + 1,) increasing edges.
        rule: ``train`` (outer edges 0 and +∞) or ``cohort`` (outer edges min − 1e-6, max + 1e-6).
    """

    edges: tuple[float, ...]
    rule: str

    @property
    def n_bins(self) -> int:
        """Number of bins (= model outputs)."""
        return len(self.edges) - 1

    def assign(self, time: ArrayLike) -> np.ndarray:
        """Bin index of each time (int64); raises when a time lies outside the outer edges."""
        t = np.asarray(time, dtype=np.float64)
        edges = np.asarray(self.edges)
        bins = np.searchsorted(edges, t, side="right") - 1
        if (bins < 0).any() or (bins >= self.n_bins).any():
            bad = t[(bins < 0) | (bins >= self.n_bins)][:3]
            raise ValueError(
                f"survival times {bad.tolist()} lie outside the bin edges {self.edges[0]}..{self.edges[-1]} "
                f"(rule {self.rule!r}); use rule='train', whose outer edges are 0 and +inf"
            )
        return bins.astype(np.int64)


def quantile_bins(time: ArrayLike, event: ArrayLike, n_bins: int = 4, rule: str = "train") -> TimeBins:
    """Quantile edges of the uncensored times (one row per case), as ``pd.qcut`` computes them.

    Args:
        time: (n,) survival times of the cases the bins are fitted on (the training fold for ``train``, the
            whole cohort for ``cohort``).
        event: (n,) 1 = event observed.
        n_bins: number of bins.
        rule: ``train`` [I] or ``cohort`` [F]; see the module docstring.
    """
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(bool)
    if rule not in ("train", "cohort"):
        raise ValueError(f"bin rule {rule!r} is unknown; use 'train' [I] or 'cohort' [F]")
    uncensored = t[e]
    if uncensored.size < n_bins:
        raise ValueError(f"{uncensored.size} uncensored cases cannot define {n_bins} quantile bins")
    inner = np.quantile(uncensored, np.linspace(0, 1, n_bins + 1)[1:-1])  # linear, as pandas' qcut
    if np.unique(inner).size != inner.size:
        raise ValueError(f"quantile bin edges {inner.tolist()} are not distinct; use fewer bins")
    if rule == "train":
        edges = [0.0, *inner.tolist(), float("inf")]
    else:
        edges = [float(t.min()) - 1e-6, *inner.tolist(), float(t.max()) + 1e-6]
    return TimeBins(tuple(edges), rule)


class NLLSurvLoss(nn.Module):
    """Discrete-time hazard NLL (see the module docstring for the formula).

    Args:
        alpha: weight of the uncensored-only term (GPFM trains with 0).
        eps: lower clamp of probabilities before the log.
    """

    def __init__(self, alpha: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__()
        self.alpha = alpha
        self.eps = eps

    def forward(self, logits: Tensor, bins: Tensor, censorship: Tensor) -> Tensor:
        """Mean loss.

        Args:
            logits: (B, K) hazard logits.
            bins: (B,) int bin index of each case's time.
            censorship: (B,) 1 = censored, 0 = event.
        """
        hazards = torch.sigmoid(logits)
        surv = torch.cumprod(1 - hazards, dim=1)
        surv_pad = torch.cat([torch.ones_like(surv[:, :1]), surv], dim=1)  # S_{-1} = 1 at column 0
        y = bins.long().view(-1, 1)
        c = censorship.to(logits.dtype).view(-1, 1)
        s_prev = torch.gather(surv_pad, 1, y).clamp_min(self.eps)
        h_y = torch.gather(hazards, 1, y).clamp_min(self.eps)
        s_y = torch.gather(surv_pad, 1, y + 1).clamp_min(self.eps)
        uncensored = -(1 - c) * (torch.log(s_prev) + torch.log(h_y))
        censored = -c * torch.log(s_y)
        loss = (1 - self.alpha) * (uncensored + censored) + self.alpha * uncensored
        return loss.mean()


def risk_from_logits(logits: Tensor) -> Tensor:
    """Risk ``−Σ_j S_j`` from (B, K) hazard logits (higher = earlier expected event)."""
    return -torch.cumprod(1 - torch.sigmoid(logits), dim=1).sum(dim=1)
