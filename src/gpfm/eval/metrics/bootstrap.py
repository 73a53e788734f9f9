"""Seeded percentile bootstrap confidence intervals and mean ± sd summaries over runs.

Pinned behaviour ([F/I]):

* 1,000 resamples of the test items with replacement, seed 0;
* resampling is **stratified by class** (each class keeps its size), so AUROC stays defined in every resample;
  degenerate resamples of other statistics are skipped and counted;
* the interval is the 2.5 / 97.5 percentile of the resampled statistic (linear interpolation, numpy's
  default); the point estimate is always the full-test-set value, never the bootstrap mean.

Resamples are represented as multiplicity vectors ``w`` (how often each item was drawn), so the classification
metrics score all resamples in a few matrix products instead of a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gpfm.eval.metrics.classification import (
    CLASSIFICATION_METRICS,
    confusion_counts,
    macro_auroc,
    metrics_from_confusion,
)

N_RESAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile interval and how many resamples it rests on.

    Attributes:
        low: 2.5th percentile (for the default 95% level).
        high: 97.5th percentile.
        n_valid: resamples where the statistic was defined.
        n_skipped: degenerate resamples (statistic undefined), excluded from the percentiles.
    """

    low: float
    high: float
    n_valid: int
    n_skipped: int

    def as_tuple(self) -> tuple[float, float]:
        """(low, high), the form stored in :attr:`ProtocolResult.ci95`."""
        return (self.low, self.high)


def resample_weights(
    n_items: int, n_resamples: int = N_RESAMPLES, seed: int = SEED, strata: np.ndarray | None = None
) -> np.ndarray:
    """Bootstrap multiplicities: row b says how often each item is drawn in resample b.

    Args:
        n_items: N.
        n_resamples: B.
        seed: generator seed (numpy PCG64).
        strata: optional (N,) stratum ids (class labels); each stratum is resampled to its own size.

    Returns:
        (B, N) float64 counts; every row sums to N (and to each stratum's size within it).
    """
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_resamples, n_items))
    groups = (
        [np.arange(n_items)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    )
    rows = np.arange(n_resamples)[:, None]
    for members in groups:
        m = len(members)
        if m:
            # m uniform draws with replacement per resample, counted per member with one bincount
            draws = rng.integers(0, m, size=(n_resamples, m))
            counts = np.bincount((rows * m + draws).ravel(), minlength=n_resamples * m)
            weights[:, members] = counts.reshape(n_resamples, m)
    return weights


def _percentile_ci(values: np.ndarray, level: float) -> BootstrapCI:
    valid = values[~np.isnan(values)]
    if not len(valid):
        return BootstrapCI(float("nan"), float("nan"), 0, len(values))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return BootstrapCI(float(low), float(high), len(valid), len(values) - len(valid))


def bootstrap_classification(
    y_true: np.ndarray,
    proba: np.ndarray,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    stratified: bool = True,
    level: float = 0.95,
    metrics: Sequence[str] = CLASSIFICATION_METRICS,
) -> dict[str, BootstrapCI]:
    """Percentile CIs of the :func:`classification_metrics` set, all resamples scored at once.

    Args:
        y_true: (N,) labels in ``[0, K)``.
        proba: (N, K) probabilities; predictions are their arg-max.
        n_resamples: B (pinned 1,000).
        seed: resampling seed (pinned 0).
        stratified: resample within each class (pinned True).
        level: interval coverage.
        metrics: which metrics to interval.

    Returns:
        metric name → :class:`BootstrapCI`.
    """
    y = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    pred = proba.argmax(axis=1)
    out: dict[str, BootstrapCI] = {}
    # chunk the resamples so the (B, N) weight matrix stays small on large test sets
    per_chunk = max(1, int(2e7 // max(1, len(y) * max(k, 4))))
    values: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    weights_all = resample_weights(len(y), n_resamples, seed, y if stratified else None)
    for start in range(0, n_resamples, per_chunk):
        w = weights_all[start : start + per_chunk]
        scores = metrics_from_confusion(confusion_counts(y, pred, k, w))
        if "macro_auroc" in metrics:
            scores["macro_auroc"] = macro_auroc(y, proba, w)
        for m in metrics:
            values[m].append(np.asarray(scores[m], dtype=np.float64))
    for m in metrics:
        out[m] = _percentile_ci(np.concatenate(values[m]), level)
    return out


def bootstrap_statistic(
    statistic: Callable[[np.ndarray], float],
    n_items: int,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    strata: np.ndarray | None = None,
    level: float = 0.95,
) -> BootstrapCI:
    """Percentile CI of any statistic of resampled item indices (a Python loop; use for cheap statistics).

    Args:
        statistic: maps an index array (with repeats) to a float; NaN marks a degenerate resample.
        n_items: N.
        n_resamples: B.
        seed: generator seed.
        strata: optional (N,) stratum ids; each stratum is resampled to its own size.
        level: interval coverage.
    """
    weights = resample_weights(n_items, n_resamples, seed, strata).astype(np.int64)
    items = np.arange(n_items)
    values = np.array([statistic(np.repeat(items, row)) for row in weights], dtype=np.float64)
    return _percentile_ci(values, level)


@dataclass(frozen=True)
class RunSummary:
    """Mean, sample standard deviation (ddof 1) and standard error of one metric over runs/folds/seeds."""

    mean: float
    sd: float
    se: float
    n: int


def summarize_runs(values: Sequence[float]) -> RunSummary:
    """Mean ± sd (ddof 1; 0 for a single run) and SE = sd/√n over folds or seeds."""
    arr = np.asarray(values, dtype=np.float64)
    if not len(arr):
        raise ValueError("summarize_runs needs at least one value")
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return RunSummary(float(arr.mean()), sd, sd / np.sqrt(len(arr)), len(arr))


def summarize_run_dicts(runs: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per-metric mean and sd over run dicts (metrics missing from some runs use the runs that have them)."""
    names = sorted({k for run in runs for k in run})
    means, sds = {}, {}
    for name in names:
        summary = summarize_runs([run[name] for run in runs if name in run])
        means[name], sds[name] = summary.mean, summary.sd
    return means, sds
