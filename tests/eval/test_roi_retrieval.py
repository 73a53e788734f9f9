"""Retrieval metrics against brute-force hand computation; the three named protocols on real LC25000."""

from __future__ import annotations

import numpy as np
import pytest
from _roi_data import lc25000_roi, synthetic_roi
from sklearn.metrics import jaccard_score

from gpfm.eval import create_protocol
from gpfm.eval.metrics.retrieval import (
    majority_vote,
    nearest_neighbours,
    rank_weighted_class_scores,
    retrieval_hits,
    topk_macro_accuracy,
)
from gpfm.eval.families.roi_retrieval import macro_jaccard


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_nearest_neighbours_equals_brute_force(metric) -> None:
    rng = np.random.default_rng(0)
    q, keys = rng.normal(size=(23, 7)), rng.normal(size=(50, 7))
    idx, sim = nearest_neighbours(q, keys, 6, metric=metric, chunk_size=5)
    if metric == "l2":
        full = -np.linalg.norm(q[:, None] - keys[None], axis=2)
    else:
        full = q @ keys.T
    ref = np.argsort(-full, axis=1)[:, :6]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(sim, np.take_along_axis(full, ref, 1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown retrieval metric"):
        nearest_neighbours(q, keys, 2, metric="manhattan")


def test_majority_vote_tie_break_by_best_rank() -> None:
    labels = np.array([[2, 1, 1, 2], [0, 1, 2, 2], [1, 0, 0, 1], [3, 3, 0, 0]])
    # row 0: 2 and 1 tie (2 each), 2 ranks first; row 1: class 2 wins 2-1-1; row 3: 3 first
    np.testing.assert_array_equal(majority_vote(labels, 4), [2, 2, 1, 3])


def _hits_by_hand(y, nl, k):
    acc, mv, ap = [], [], []
    for yq, row in zip(y, nl[:, :k], strict=True):
        acc.append(float(yq in row))
        counts = {c: list(row).count(c) for c in row}
        best = max(counts.values())
        mv.append(float(next(c for c in row if counts[c] == best) == yq))
        rel = [r == yq for r in row]
        precs = [sum(rel[: i + 1]) / (i + 1) for i in range(k) if rel[i]]
        ap.append(float(np.mean(precs)) if precs else 0.0)
    return np.array(acc), np.array(mv), np.array(ap)


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_retrieval_hits_equal_hand_computation(k) -> None:
    rng = np.random.default_rng(k)
    y = rng.integers(0, 4, 40)
    nl = rng.integers(0, 4, (40, 10))
    ours = retrieval_hits(y, nl, k)
    acc, mv, ap = _hits_by_hand(y, nl, k)
    np.testing.assert_array_equal(ours["acc"], acc)
    np.testing.assert_array_equal(ours["mv"], mv)
    np.testing.assert_allclose(ours["ap"], ap)


def test_gpfm_rank_weights_and_topk_macro_accuracy_by_hand() -> None:
    nl = np.array([[1, 0, 0], [2, 2, 1], [0, 1, 2]])
    scores = rank_weighted_class_scores(nl, 3)
    # row 0: class 1 → 1.0, class 0 → 0.9 + 0.8; row 1: class 2 → 1.9, class 1 → 0.8; row 2: 1.0/0.9/0.8
    raw = np.array([[1.7, 1.0, 0.0], [0.0, 0.8, 1.9], [1.0, 0.9, 0.8]])
    np.testing.assert_allclose(scores, np.exp(raw) / np.exp(raw).sum(1, keepdims=True))
    y = np.array([1, 2, 2])
    # top-1 hits: row0 predicts 0 (miss), row1 2 (hit), row2 0 (miss) → class 1: 0/1, class 2: 1/2 → 0.25
    assert topk_macro_accuracy(y, scores, 1) == pytest.approx(0.25)
    # top-2: row0 {0,1} hit, row1 {2,1} hit, row2 {0,1} miss → class 1: 1, class 2: 0.5
    assert topk_macro_accuracy(y, scores, 2) == pytest.approx(0.75)
    # ties break towards the lower class index
    assert topk_macro_accuracy(np.array([1]), np.array([[0.5, 0.5]]), 1) == 0.0


def test_macro_jaccard_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    p[p == 3] = 2  # one class never predicted
    cm = np.zeros((4, 4))
    np.add.at(cm, (y, p), 1)
    assert macro_jaccard(cm) == pytest.approx(jaccard_score(y, p, average="macro", zero_division=0))


def test_protocols_on_synthetic_match_hand_metrics(tmp_path) -> None:
    data = synthetic_roi(sep=0.6, seed=9)
    (xg, yg), (xq, yq) = data.arrays("train"), data.arrays("test")
    pb = create_protocol("roi.retrieval.pathobench").run(data, tmp_path / "pb", task="t", encoder="e")
    ref_idx = np.argsort(np.linalg.norm(xq[:, None] - xg[None], axis=2), axis=1)[:, :10]
    for k in (1, 5, 10):
        acc, mv, ap = _hits_by_hand(yq, yg[ref_idx], k)
        assert pb.metrics[f"acc@{k}"] == pytest.approx(acc.mean())
        assert pb.metrics[f"mv@{k}"] == pytest.approx(mv.mean())
        assert pb.metrics[f"map@{k}"] == pytest.approx(ap.mean())
        low, high = pb.ci95[f"acc@{k}"]
        assert low <= pb.metrics[f"acc@{k}"] <= high
    g = create_protocol("roi.retrieval.gpfm").run(data, tmp_path / "g", task="t", encoder="e")
    mean, std = xg.mean(0), xg.std(0, ddof=1)
    zq, zg = (xq - mean) / std, (xg - mean) / std
    nl = yg[np.argsort(np.linalg.norm(zq[:, None] - zg[None], axis=2), axis=1)[:, :3]]
    hand = np.zeros((len(yq), 3))
    for i, row in enumerate(nl):
        for r, c in enumerate(row):
            hand[i, c] += 1 - 0.1 * r
    assert g.metrics["top1_macro_accuracy"] == pytest.approx(topk_macro_accuracy(yq, hand, 1))
    assert g.metrics["top1_macro_accuracy"] == pytest.approx(g.metrics["balanced_accuracy"])
    assert g.metrics["top3_macro_accuracy"] == 1.0 and "top5_macro_accuracy" not in g.metrics
    th = create_protocol("roi.retrieval.thunder").run(data, tmp_path / "th", task="t", encoder="e")
    assert th.metrics["accuracy@1"] == pytest.approx(pb.metrics["acc@1"], abs=0.2)  # cosine vs L2: close


def test_gpfm_retrieval_refuses_more_than_ten_classes(tmp_path) -> None:
    data = synthetic_roi(n_per_class=10, k=11, seed=0)
    with pytest.raises(ValueError, match="allow_nonpositive_weights"):
        create_protocol("roi.retrieval.gpfm").run(data, tmp_path, task="t", encoder="e")
    result = create_protocol("roi.retrieval.gpfm", allow_nonpositive_weights=True).run(
        data, tmp_path, task="t", encoder="e"
    )
    assert 0 <= result.score <= 1


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "overrides", "metric", "bound"),
    [
        ("roi.retrieval.pathobench", {}, "acc@1", 0.88),  # measured 0.933
        ("roi.retrieval.pathobench", {"centering": True}, "mv@5", 0.85),  # measured 0.919
        ("roi.retrieval.thunder", {}, "balanced_accuracy@5", 0.85),  # measured 0.926
        ("roi.retrieval.gpfm", {}, "top1_macro_accuracy", 0.85),  # measured 0.907
    ],
)
def test_retrieval_real_lc25000(name, overrides, metric, bound, lc25000_features, tmp_path) -> None:
    """Real EfficientNet-Lite0 features, duplicate-grouped split; chance top-1 is 0.33."""
    result = create_protocol(name, **overrides).run(
        lc25000_roi(lc25000_features), tmp_path, task="lc25000", encoder="efficientnet-lite0-imagenet"
    )
    assert result.metrics[metric] > bound
    assert result.score > 0.85
    assert result.provenance["split_hash"] and result.provenance["protocol_id"] == f"{name}@1"
