"""Elastic-net Cox regression on pooled slide/case features (``surv.coxnet``), alpha chosen without test data.

Model: scikit-survival ``CoxnetSurvivalAnalysis`` with one α per fit, ``l1_ratio`` 0.5, ``max_iter`` 100,000,
on
features standardised with the training rows' mean and sd (Patho-Bench ``coxnet.yaml`` grid
α ∈ {0.01, 0.02, 0.07}). α is selected by the mean Harrell c-index over ``inner_folds`` (5) event-stratified
folds of the training rows (``selection="cv"`` [I]), or on a given validation set (``"val"``); the
selected α is then refit on all training rows. Fits that fail to converge score −∞ and are recorded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedKFold

from gpfm.eval.metrics.survival import concordance_index


def _structured(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    return np.array(
        list(zip(np.asarray(event).astype(bool), np.asarray(time, dtype=np.float64), strict=True)),
        dtype=[("event", bool), ("time", np.float64)],
    )


@dataclass
class CoxnetModel:
    """A fitted elastic-net Cox model with its standardisation and selection record.

    Attributes:
        alpha: selected penalty.
        l1_ratio: elastic-net mixing.
        mean: (D,) training feature means.
        scale: (D,) training feature sds (1 where constant).
        estimator: the fitted ``CoxnetSurvivalAnalysis``.
        selection: α → selection c-index (−inf for failed fits).
    """

    alpha: float
    l1_ratio: float
    mean: np.ndarray
    scale: np.ndarray
    estimator: object
    selection: dict[float, float] = field(default_factory=dict)

    def predict_risk(self, x: np.ndarray) -> np.ndarray:
        """Linear predictor (log hazard ratio) per row; higher = worse."""
        return np.asarray(self.estimator.predict((np.asarray(x, dtype=np.float64) - self.mean) / self.scale))


def _fit_one(
    x: np.ndarray, time: np.ndarray, event: np.ndarray, alpha: float, l1_ratio: float, max_iter: int
):
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    model = CoxnetSurvivalAnalysis(alphas=[alpha], l1_ratio=l1_ratio, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; failures raise ArithmeticError below
        model.fit(x, _structured(time, event))
    return model


def _score(model, x: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    try:
        return concordance_index(event, time, model.predict(x))
    except ValueError:  # no events / comparable pairs in this part
        return float("nan")


def fit_coxnet(
    x: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    *,
    alphas: Sequence[float] = (0.01, 0.02, 0.07),
    l1_ratio: float = 0.5,
    max_iter: int = 100_000,
    selection: str = "cv",
    inner_folds: int = 5,
    x_val: np.ndarray | None = None,
    time_val: np.ndarray | None = None,
    event_val: np.ndarray | None = None,
    seed: int = 0,
) -> CoxnetModel:
    """Select α (see the module docstring) and fit on all of ``x``.

    Args:
        x: (n, D) training features.
        time: (n,) training times.
        event: (n,) 1 = event observed.
        alphas: candidate penalties.
        l1_ratio: elastic-net mixing.
        max_iter: coordinate-descent iterations.
        selection: ``cv`` (inner folds of the training rows) or ``val`` (the given validation rows).
        inner_folds: folds of ``cv``.
        x_val: validation features for ``val``.
        time_val: validation times.
        event_val: validation events.
        seed: inner-fold shuffling seed.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    scores: dict[float, float] = {}
    for alpha in alphas:
        try:
            if selection == "cv":
                parts = StratifiedKFold(inner_folds, shuffle=True, random_state=seed).split(z, event)
                vals = [
                    _score(
                        _fit_one(z[tr], time[tr], event[tr], alpha, l1_ratio, max_iter),
                        z[te],
                        time[te],
                        event[te],
                    )
                    for tr, te in parts
                ]
                scores[alpha] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("-inf")
            elif selection == "val":
                if x_val is None or time_val is None or event_val is None:
                    raise ValueError("coxnet selection 'val' needs x_val, time_val and event_val")
                model = _fit_one(z, time, event, alpha, l1_ratio, max_iter)
                s = _score(model, (np.asarray(x_val, dtype=np.float64) - mean) / scale, time_val, event_val)
                scores[alpha] = s if np.isfinite(s) else float("-inf")
            else:
                raise ValueError(f"coxnet selection {selection!r} is unknown; use 'cv' or 'val'")
        except ArithmeticError:
            scores[alpha] = float("-inf")
    best = max(alphas, key=lambda a: (scores[a], a))  # ties → the stronger penalty
    if not np.isfinite(scores[best]):
        raise RuntimeError(
            f"coxnet: no alpha in {list(alphas)} could be fitted and scored; try larger alphas"
        )
    return CoxnetModel(
        best, l1_ratio, mean, scale, _fit_one(z, time, event, best, l1_ratio, max_iter), scores
    )
