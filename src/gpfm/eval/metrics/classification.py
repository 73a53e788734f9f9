"""Classification metrics with pinned definitions, computed from (optionally weighted) confusion counts.

Every metric here accepts *sample weights*: integer multiplicities turn one test set into a bootstrap
resample without copying arrays (see :mod:`gpfm.eval.metrics.bootstrap`), and a leading batch axis lets one
call score a thousand resamples. Definitions, with ``C`` the K×K confusion
matrix (rows = truth, columns = prediction) and ``n_k = Σ_j C[k, j]`` the support of class k:

* accuracy = trace(C) / ΣC.
* balanced accuracy = mean over classes with ``n_k > 0`` of recall ``C[k, k] / n_k`` (classes absent from the
  truth are excluded, as in scikit-learn and torchmetrics' macro accuracy).
* F1_k = 2·C[k,k] / (2·C[k,k] + FP_k + FN_k); macro F1 averages F1_k uniformly over the classes that occur in
  the truth or the predictions (scikit-learn's default label set); weighted F1 averages by ``n_k``.
* quadratic κ = 1 − Σ w∘C / Σ w∘E with ``w_ij = (i − j)² / (K − 1)²`` on the label *indices* 0..K−1 (all K
  labels, so an absent middle grade keeps its ordinal distance) and ``E`` the outer product of the marginals
  divided by ΣC.
* macro AUROC = mean over classes of the one-vs-rest ROC AUC of ``proba[:, k]``; ties count one half
  (Mann–Whitney). Classes without positives or without negatives in the truth are skipped. Binary tasks
  (K = 2) report the AUC of the positive class (index 1) only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASSIFICATION_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "weighted_f1",
    "quadratic_kappa",
    "macro_auroc",
)
"""Keys returned by :func:`classification_metrics`, in report order."""


def _as_weights(n: int, weights: np.ndarray | None) -> np.ndarray:
    """(B, N) float64 weights; a missing weight vector means one unweighted copy."""
    if weights is None:
        return np.ones((1, n))
    w = np.asarray(weights, dtype=np.float64)
    return w[None, :] if w.ndim == 1 else w


def confusion_counts(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted confusion matrices.

    Args:
        y_true: (N,) integer labels in ``[0, num_classes)``.
        y_pred: (N,) integer predictions in ``[0, num_classes)``.
        num_classes: K.
        weights: None, (N,) or (B, N) non-negative sample weights.

    Returns:
        (K, K) when ``weights`` is None or 1-D, else (B, K, K); rows are the truth.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    pair = y_true * num_classes + y_pred
    w = _as_weights(len(y_true), weights)
    # one-hot of the (truth, prediction) pair, so every resample's counts are one matrix product
    onehot = np.zeros((len(pair), num_classes * num_classes))
    onehot[np.arange(len(pair)), pair] = 1.0
    counts = (w @ onehot).reshape(-1, num_classes, num_classes)
    return counts[0] if weights is None or np.ndim(weights) == 1 else counts


def metrics_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro/weighted F1 and quadratic κ from (…, K, K) confusion counts."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[-1]
    total = cm.sum(axis=(-2, -1))
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = tp.sum(-1) / total
        present = support > 0
        recall = np.where(present, tp / np.where(present, support, 1.0), 0.0)
        balanced = recall.sum(-1) / present.sum(-1)
        denom = support + predicted  # = 2TP + FP + FN
        occurs = denom > 0
        f1 = np.where(occurs, 2.0 * tp / np.where(occurs, denom, 1.0), 0.0)
        macro_f1 = f1.sum(-1) / occurs.sum(-1)
        weighted_f1 = (f1 * support).sum(-1) / support.sum(-1)
        idx = np.arange(k, dtype=np.float64)
        w = (idx[:, None] - idx[None, :]) ** 2
        expected = support[..., :, None] * predicted[..., None, :] / total[..., None, None]
        kappa = 1.0 - (w * cm).sum(axis=(-2, -1)) / (w * expected).sum(axis=(-2, -1))
    return {
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        "quadratic_kappa": kappa,
    }


def binary_auroc(is_positive: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted ROC AUC (Mann–Whitney U with ties counted ½) for one or many weight vectors.

    AUC = Σ_{i∈pos} w_i · (Σ_{j∈neg, s_j<s_i} w_j + ½ Σ_{j∈neg, s_j=s_i} w_j) / (W_pos · W_neg).

    Args:
        is_positive: (N,) bool.
        score: (N,) higher = more positive.
        weights: None, (N,) or (B, N) sample weights.

    Returns:
        A scalar array (weights None or 1-D) or (B,); NaN where a resample lacks positives or negatives.
    """
    pos = np.asarray(is_positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    w = _as_weights(len(score), weights)
    pos_idx, neg_idx = np.flatnonzero(pos), np.flatnonzero(~pos)
    neg_order = neg_idx[np.argsort(score[neg_idx], kind="stable")]
    neg_scores = score[neg_order]
    # for each positive: negatives strictly below (lo) and at or below (hi) its score; ties count ½
    lo = np.searchsorted(neg_scores, score[pos_idx], side="left")
    hi = np.searchsorted(neg_scores, score[pos_idx], side="right")
    cum_neg = np.zeros((w.shape[0], len(neg_order) + 1))
    np.cumsum(w[:, neg_order], axis=1, out=cum_neg[:, 1:])
    pos_w = w[:, pos_idx]
    numer = 0.5 * (pos_w * (cum_neg[:, lo] + cum_neg[:, hi])).sum(axis=1)
    w_pos, w_neg = pos_w.sum(axis=1), cum_neg[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where((w_pos > 0) & (w_neg > 0), numer / (w_pos * w_neg), np.nan)
    return auc[0] if weights is None or np.ndim(weights) == 1 else auc


def macro_auroc(y_true: np.ndarray, proba: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Macro one-vs-rest AUROC (binary: AUC of class 1), skipping classes that are all-positive or absent.

    Args:
        y_true: (N,) labels in ``[0, K)``.
        proba: (N, K) class scores (probabilities).
        weights: None, (N,) or (B, N) sample weights.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    if k == 2:
        return binary_auroc(y_true == 1, proba[:, 1], weights)
    per_class = np.stack([np.atleast_1d(binary_auroc(y_true == c, proba[:, c], weights)) for c in range(k)])
    defined = ~np.isnan(per_class)
    count = defined.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(
            count > 0, np.where(defined, per_class, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan
        )
    return out[0] if weights is None or np.ndim(weights) == 1 else out


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    labels: Sequence[str] | None = None,
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """The pinned ROI/WSI classification metric set (see the module docstring for every definition).

    Predictions are ``argmax(proba)`` (lowest class index on ties).

    Args:
        y_true: (N,) integer labels in ``[0, K)``.
        proba: (N, K) class probabilities; K = ``len(labels)`` when labels are given.
        labels: class names (only checked against the width of ``proba``).
        weights: optional (N,) sample weights (e.g. bootstrap multiplicities).

    Returns:
        ``{accuracy, balanced_accuracy, macro_f1, weighted_f1, quadratic_kappa, macro_auroc}`` as floats.

    Raises:
        ValueError: shape mismatch or labels outside ``[0, K)``.
    """
    y = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != len(y):
        raise ValueError(f"proba must be (N, K) with N = {len(y)} labels; got shape {proba.shape}")
    k = proba.shape[1]
    if labels is not None and len(labels) != k:
        raise ValueError(f"{len(labels)} label names but proba has {k} columns")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}); got range [{y.min()}, {y.max()}]")
    pred = proba.argmax(axis=1)
    out = {
        name: float(v) for name, v in metrics_from_confusion(confusion_counts(y, pred, k, weights)).items()
    }
    out["macro_auroc"] = float(macro_auroc(y, proba, weights))
    return {name: out[name] for name in CLASSIFICATION_METRICS}


def roc_curves(
    y_true: np.ndarray, proba: np.ndarray, label_names: Sequence[str], max_points: int = 512
) -> dict[str, dict[str, dict[str, object]]]:
    """Per-class one-vs-rest ROC curves in the report's ``roc_curves`` artifact layout.

    Each curve steps through the distinct score thresholds from high to low (first point (0, 0), last (1, 1));
    curves longer than ``max_points`` are thinned evenly (end points kept) so reports stay small. Classes
    without positives or negatives in ``y_true`` are omitted.

    Returns:
        ``{"classes": {name: {"fpr": [...], "tpr": [...], "auc": float}}}``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    classes: dict[str, dict[str, object]] = {}
    columns = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    for c in columns:
        pos = y_true == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        score = proba[:, c]
        order = np.argsort(-score, kind="stable")
        s, p = score[order], pos[order]
        last_of_threshold = np.r_[s[1:] != s[:-1], True]
        tps = np.cumsum(p)[last_of_threshold]
        fps = np.cumsum(~p)[last_of_threshold]
        fpr = np.r_[0.0, fps / n_neg]
        tpr = np.r_[0.0, tps / n_pos]
        if len(fpr) > max_points:
            keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        classes[str(label_names[c])] = {
            "fpr": [round(float(v), 6) for v in fpr],
            "tpr": [round(float(v), 6) for v in tpr],
            "auc": float(binary_auroc(pos, score)),
        }
    return {"classes": classes}


def confusion_matrix_artifact(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]
) -> dict[str, object]:
    """The report's ``confusion_matrix`` artifact: ``{"labels": [...], "matrix": [[int]]}`` (rows = truth)."""
    cm = confusion_counts(y_true, y_pred, len(label_names))
    return {"labels": [str(n) for n in label_names], "matrix": cm.astype(int).tolist()}
