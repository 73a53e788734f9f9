"""Classification metrics and bootstrap CIs vs scikit-learn on random inputs with ties and absent classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from gpfm.eval.metrics import (
    binary_auroc,
    bootstrap_classification,
    bootstrap_statistic,
    classification_metrics,
    confusion_counts,
    resample_weights,
    roc_curves,
    summarize_run_dicts,
    summarize_runs,
)


def _random_case(seed: int, n: int, k: int, absent: tuple[int, ...] = (), tie_levels: int | None = None):
    rng = np.random.default_rng(seed)
    present = [c for c in range(k) if c not in absent]
    y = rng.choice(present, size=n)
    proba = rng.random((n, k))
    if tie_levels is not None:  # coarse scores → many ties, also in the arg-max
        proba = np.round(proba * tie_levels) / tie_levels + 1e-3
    proba /= proba.sum(1, keepdims=True)
    return y, proba


def _sklearn_reference(
    y: np.ndarray, proba: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    k = proba.shape[1]
    pred = proba.argmax(1)
    if k == 2:
        auc = skm.roc_auc_score(y == 1, proba[:, 1], sample_weight=weights)
    else:
        aucs = [
            skm.roc_auc_score(y == c, proba[:, c], sample_weight=weights)
            for c in range(k)
            if 0 < (y == c).sum() < len(y)
        ]
        auc = float(np.mean(aucs))
    return {
        "accuracy": skm.accuracy_score(y, pred, sample_weight=weights),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred, sample_weight=weights),
        "macro_f1": skm.f1_score(y, pred, average="macro", sample_weight=weights, zero_division=0),
        "weighted_f1": skm.f1_score(y, pred, average="weighted", sample_weight=weights, zero_division=0),
        "quadratic_kappa": skm.cohen_kappa_score(
            y, pred, labels=np.arange(k), weights="quadratic", sample_weight=weights
        ),
        "macro_auroc": auc,
    }


@pytest.mark.parametrize(
    ("seed", "n", "k", "absent", "ties"),
    [
        (0, 200, 2, (), None),
        (1, 150, 2, (), 3),
        (2, 300, 5, (), None),
        (3, 300, 5, (), 4),
        (4, 120, 6, (2,), None),  # class 2 never occurs in the truth
        (5, 90, 4, (0, 3), 2),  # two absent classes and heavy ties
        (6, 40, 9, (), 5),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_classification_metrics_match_sklearn(seed, n, k, absent, ties) -> None:
    y, proba = _random_case(seed, n, k, absent, ties)
    ours = classification_metrics(y, proba, labels=[f"c{i}" for i in range(k)])
    ref = _sklearn_reference(y, proba)
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_weighted_metrics_equal_metrics_on_the_repeated_items() -> None:
    """Bootstrap multiplicities as sample weights give the metrics of the physically resampled set."""
    y, proba = _random_case(7, 80, 4, (), 3)
    counts = np.random.default_rng(1).multinomial(80, np.full(80, 1 / 80))
    ours = classification_metrics(y, proba, weights=counts.astype(float))
    idx = np.repeat(np.arange(80), counts)
    ref = _sklearn_reference(y[idx], proba[idx])
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name


def test_binary_auroc_batched_weights_and_degenerate() -> None:
    rng = np.random.default_rng(3)
    pos = rng.random(60) < 0.4
    score = np.round(rng.random(60), 1)
    w = resample_weights(60, 5, seed=2)
    batched = binary_auroc(pos, score, w)
    for b in range(5):
        assert batched[b] == pytest.approx(skm.roc_auc_score(pos, score, sample_weight=w[b]))
    assert np.isnan(binary_auroc(np.ones(5, bool), np.arange(5.0)))


def test_confusion_counts_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert np.array_equal(confusion_counts(y, p, 4), skm.confusion_matrix(y, p, labels=range(4)))


def test_bad_shapes_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="proba must be"):
        classification_metrics([0, 1], np.ones((3, 2)))
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics([0, 5], np.ones((2, 2)))
    with pytest.raises(ValueError, match="label names"):
        classification_metrics([0, 1], np.ones((2, 2)), labels=["a", "b", "c"])


def test_roc_curves_match_sklearn_and_auc() -> None:
    y, proba = _random_case(11, 150, 3, (), 6)
    curves = roc_curves(y, proba, ["a", "b", "c"])["classes"]
    for c, name in enumerate("abc"):
        fpr, tpr, _ = skm.roc_curve(y == c, proba[:, c], drop_intermediate=False)
        assert np.allclose(curves[name]["fpr"], fpr, atol=1e-6)
        assert np.allclose(curves[name]["tpr"], tpr, atol=1e-6)
        assert curves[name]["auc"] == pytest.approx(skm.roc_auc_score(y == c, proba[:, c]))
    thin = roc_curves(y, proba, ["a", "b", "c"], max_points=10)["classes"]["a"]
    assert len(thin["fpr"]) <= 10 and thin["fpr"][0] == 0.0 and thin["tpr"][-1] == 1.0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bootstrap_ci_equals_percentiles_of_explicit_resamples() -> None:
    """The vectorised CI equals a slow loop over the same stratified resamples scored by scikit-learn."""
    y, proba = _random_case(5, 60, 3, (), None)
    ci = bootstrap_classification(y, proba, n_resamples=200, seed=4)
    w = resample_weights(60, 200, seed=4, strata=y).astype(int)
    slow = {m: [] for m in ("balanced_accuracy", "macro_auroc", "macro_f1", "quadratic_kappa")}
    for row in w:
        assert all(row[y == c].sum() == (y == c).sum() for c in range(3))  # stratified
        idx = np.repeat(np.arange(60), row)
        ref = _sklearn_reference(y[idx], proba[idx])
        for m in slow:
            slow[m].append(ref[m])
    for m, values in slow.items():
        low, high = np.percentile(values, [2.5, 97.5])
        assert ci[m].low == pytest.approx(low, abs=1e-12) and ci[m].high == pytest.approx(high, abs=1e-12), m
        assert ci[m].n_valid == 200 and ci[m].n_skipped == 0
    full = classification_metrics(y, proba)["balanced_accuracy"]
    assert ci["balanced_accuracy"].low <= full <= ci["balanced_accuracy"].high
    again = bootstrap_classification(y, proba, n_resamples=200, seed=4)
    assert again["macro_auroc"] == ci["macro_auroc"]  # seeded


def test_unstratified_bootstrap_counts_degenerate_resamples() -> None:
    y = np.array([0] * 19 + [1])
    proba = np.stack([np.linspace(1, 0, 20), np.linspace(0, 1, 20)], 1)
    ci = bootstrap_classification(y, proba, n_resamples=300, stratified=False, metrics=("macro_auroc",))
    assert ci["macro_auroc"].n_skipped > 0  # resamples without the single positive
    assert ci["macro_auroc"].n_valid + ci["macro_auroc"].n_skipped == 300


def test_bootstrap_statistic_and_run_summaries() -> None:
    x = np.random.default_rng(0).normal(size=50)
    ci = bootstrap_statistic(lambda idx: float(x[idx].mean()), 50, n_resamples=500)
    assert ci.low < x.mean() < ci.high
    s = summarize_runs([0.7, 0.8, 0.9])
    assert s.mean == pytest.approx(0.8) and s.sd == pytest.approx(np.std([0.7, 0.8, 0.9], ddof=1))
    assert s.se == pytest.approx(s.sd / np.sqrt(3))
    assert summarize_runs([0.5]).sd == 0.0
    means, sds = summarize_run_dicts([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    assert means == {"a": 2.0, "b": 2.0} and sds["b"] == 0.0
