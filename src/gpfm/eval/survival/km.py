"""Kaplan–Meier curves of predicted risk groups and the log-rank test between them.

* **Kaplan–Meier** (product-limit): at each distinct event time ``t_k`` with ``d_k`` events among ``n_k`` at
  risk (time ≥ t_k), ``Ŝ(t) = Π_{t_k ≤ t} (1 − d_k / n_k)``. Curves are evaluated at every distinct observed
  time, as ``sksurv.nonparametric.kaplan_meier_estimator`` does.
* **Log-rank** over G groups: at each distinct event time, expected events ``E_g = d · n_g / n`` and the
  hypergeometric covariance ``V_gh = d (n − d)/(n − 1) · n_g/n · (δ_gh − n_h/n)``; the statistic
  ``(O − E)ᵀ V⁻ (O − E)`` over the first G − 1 groups is χ² with G − 1 degrees of freedom.
* **Risk groups**: ``median`` (low / high risk at the median predicted risk) or ``tertiles`` (low / mid /
  high). The groups are cut on the scores being plotted (for test predictions, the test scores).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


def kaplan_meier(time: ArrayLike, event: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Product-limit survival estimate.

    Args:
        time: (n,) times.
        event: (n,) 1 = event observed.

    Returns:
        ``(times, survival)``: the distinct observed times and Ŝ at each of them.
    """
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(bool)
    uniq, inverse = np.unique(t, return_inverse=True)
    deaths = np.bincount(inverse, weights=e, minlength=uniq.size)
    leaving = np.bincount(inverse, minlength=uniq.size)
    at_risk = t.size - np.concatenate([[0], np.cumsum(leaving)[:-1]])
    return uniq, np.cumprod(1.0 - deaths / at_risk)


def logrank_test(time: ArrayLike, event: ArrayLike, groups: ArrayLike) -> tuple[float, float]:
    """Log-rank χ² statistic and p-value for equal survival across groups (see the module docstring)."""
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(bool)
    labels, g = np.unique(np.asarray(groups), return_inverse=True)
    if labels.size < 2:
        raise ValueError("log-rank test needs at least two groups")
    event_times = np.unique(t[e])
    at_risk = (t[None, :] >= event_times[:, None]).astype(np.float64)  # (T, n)
    died = ((t[None, :] == event_times[:, None]) & e[None, :]).astype(np.float64)
    onehot = np.eye(labels.size)[g]  # (n, G)
    n_g, d_g = at_risk @ onehot, died @ onehot  # (T, G)
    n, d = n_g.sum(1, keepdims=True), d_g.sum(1, keepdims=True)
    observed_minus_expected = (d_g - d * n_g / n).sum(0)
    frac = n_g / n
    scale = np.where(n > 1, d * (n - d) / np.maximum(n - 1, 1), 0.0)  # (T, 1)
    # V_gh = Σ_t scale_t · frac_tg · (δ_gh − frac_th)
    cov = np.diag(scale[:, 0] @ frac) - np.einsum("t,tg,th->gh", scale[:, 0], frac, frac)
    k = labels.size - 1
    stat = float(observed_minus_expected[:k] @ np.linalg.pinv(cov[:k, :k]) @ observed_minus_expected[:k])
    return stat, float(stats.chi2.sf(stat, k))


def risk_groups(risk: ArrayLike, split: str = "median") -> np.ndarray:
    """Group name per case: ``median`` → low/high, ``tertiles`` → low/mid/high (higher risk = worse)."""
    r = np.asarray(risk, dtype=np.float64)
    if split == "median":
        return np.where(r > np.median(r), "high risk", "low risk")
    if split == "tertiles":
        lo, hi = np.quantile(r, [1 / 3, 2 / 3])
        return np.where(r > hi, "high risk", np.where(r > lo, "mid risk", "low risk"))
    raise ValueError(f"risk split {split!r} is unknown; use 'median' or 'tertiles'")


def km_curves(
    risk: ArrayLike, time: ArrayLike, event: ArrayLike, split: str = "median", groups: ArrayLike | None = None
) -> dict[str, Any]:
    """The ``km_curves`` artifact: one Kaplan–Meier curve per predicted risk group plus the log-rank p.

    Args:
        risk: (n,) predicted risk (higher = worse).
        time: (n,) times.
        event: (n,) 1 = event observed.
        split: ``median`` or ``tertiles`` (see :func:`risk_groups`).
        groups: precomputed group names (e.g. cut within each fold); overrides ``risk``/``split``.

    Returns:
        ``{"groups": {name: {"time", "survival", "n"}}, "logrank_p": float, "logrank_chi2": float,
        "split": split}``; each curve starts at (0, 1). ``logrank_p`` is NaN when only one group is non-empty.
    """
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(bool)
    names = np.asarray(groups) if groups is not None else risk_groups(risk, split)
    out: dict[str, Any] = {"groups": {}, "split": split}
    for name in ("low risk", "mid risk", "high risk"):
        mask = names == name
        if not mask.any():
            continue
        times, surv = kaplan_meier(t[mask], e[mask])
        out["groups"][name] = {
            "time": [0.0, *times.tolist()],
            "survival": [1.0, *surv.tolist()],
            "n": int(mask.sum()),
            "events": int(e[mask].sum()),
        }
    if len(out["groups"]) >= 2 and e.any():
        chi2, p = logrank_test(t, e, names)
        out["logrank_chi2"], out["logrank_p"] = chi2, p
    else:
        out["logrank_chi2"], out["logrank_p"] = float("nan"), float("nan")
    return out
