"""SimpleShot: vectorised episodes equal a per-episode hand computation; real LC25000 far above chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _roi_data import lc25000_roi, synthetic_roi
from sklearn.metrics import balanced_accuracy_score, f1_score

from gpfm.eval import create_protocol
from gpfm.eval.roi.fewshot import episode_confusions, sample_supports, simpleshot_predictions


def _episode_by_hand(x_train, y_train_support_idx, x_query):
    """One episode the slow way: centre on the support mean, L2-normalise, class means, nearest by L2."""
    support = x_train[y_train_support_idx]  # (K, n, D)
    mu = support.reshape(-1, support.shape[-1]).mean(0)
    normed = (support - mu) / np.linalg.norm(support - mu, axis=-1, keepdims=True)
    protos = normed.mean(1)
    q = (x_query - mu) / np.linalg.norm(x_query - mu, axis=1, keepdims=True)
    return np.linalg.norm(q[:, None, :] - protos[None], axis=2).argmin(1)


@pytest.mark.parametrize("shots", [1, 3, 8])
def test_vectorised_episodes_equal_hand_computation(shots) -> None:
    data = synthetic_roi(n_per_class=30, k=4, d=10, sep=0.8, seed=shots)
    (xtr, ytr), (xte, _) = data.arrays("train"), data.arrays("test")
    members = [np.flatnonzero(ytr == c) for c in range(4)]
    supports = sample_supports(members, shots, 25, np.random.default_rng(0))
    for e in range(25):  # distinct members of the right class
        for c in range(4):
            assert len(set(supports[e, c])) == shots and set(ytr[supports[e, c]]) == {c}
    fast = simpleshot_predictions(xtr, supports, xte, max_elements=500)  # several episode batches
    dense = simpleshot_predictions(xtr, supports, xte, method="dense")
    gather = simpleshot_predictions(xtr, supports, xte, method="gather", max_elements=3000)
    for e in range(25):
        hand = _episode_by_hand(xtr, supports[e], xte)
        np.testing.assert_array_equal(fast[e], hand)
        np.testing.assert_array_equal(dense[e], hand)
        np.testing.assert_array_equal(gather[e], hand)


def test_episode_confusions_and_summary_match_sklearn(tmp_path) -> None:
    data = synthetic_roi(n_per_class=20, k=3, d=8, sep=0.5, seed=7)
    result = create_protocol("roi.fewshot.simpleshot", shots=(1, 2, 4, 64), episodes=40).run(
        data, tmp_path, task="t", encoder="e"
    )
    assert result.flags and "64" in result.flags[0] and "headline at 4 shots" in result.flags[1]
    # recompute the 2-shot episodes with the same seed stream and score them with scikit-learn
    (xtr, ytr), (xte, yte) = data.arrays("train"), data.arrays("test")
    members = [np.flatnonzero(ytr == c) for c in range(3)]
    rng = np.random.default_rng(0)
    sample_supports(members, 1, 40, rng)  # the 1-shot draw comes first
    preds = simpleshot_predictions(xtr, sample_supports(members, 2, 40, rng), xte)
    bal = [balanced_accuracy_score(yte, p) for p in preds]
    f1 = [f1_score(yte, p, average="macro") for p in preds]
    assert result.metrics["balanced_accuracy@2shot"] == pytest.approx(np.mean(bal))
    assert result.metrics["macro_f1@2shot"] == pytest.approx(np.mean(f1))
    assert result.ci95["balanced_accuracy@2shot"] == pytest.approx(tuple(np.percentile(bal, [2.5, 97.5])))
    assert result.metrics_sd["balanced_accuracy@2shot"] == pytest.approx(np.std(bal, ddof=1))
    assert result.metrics["balanced_accuracy"] == result.metrics["balanced_accuracy@4shot"]
    cms = episode_confusions(yte, preds, 3)
    assert cms.shape == (40, 3, 3) and (cms.sum((1, 2)) == len(yte)).all()
    curve = json.loads((tmp_path / "fewshot.json").read_text())
    assert curve["shots"] == [1, 2, 4]


@pytest.mark.realdata
def test_simpleshot_real_lc25000(lc25000_features, tmp_path) -> None:
    """Real features, duplicate-grouped split; measured ≈0.69 (1 shot), 0.83 (4), 0.90 (16); chance 0.33."""
    data = lc25000_roi(lc25000_features)
    result = create_protocol("roi.fewshot.simpleshot", shots=(1, 4, 16), episodes=100).run(
        data, tmp_path, task="lc25000", encoder="efficientnet-lite0-imagenet"
    )
    m = result.metrics
    assert m["balanced_accuracy@16shot"] > 0.85 and m["macro_f1@16shot"] > 0.85
    assert m["balanced_accuracy@1shot"] > 0.5
    assert m["balanced_accuracy@1shot"] < m["balanced_accuracy@4shot"] < m["balanced_accuracy@16shot"]
    assert result.score == m["balanced_accuracy@16shot"] and result.provenance["episodes"] == 100
