"""ROI linear probes and kNN vs scikit-learn / brute force; selection never on test; real LC25000 scores."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from _roi_data import lc25000_roi, synthetic_roi
from sklearn.neighbors import KNeighborsClassifier

from gpfm.eval import PROTOCOLS, ProtocolResult, create_protocol
from gpfm.eval.metrics import classification_metrics
from gpfm.eval.roi.probes import sklearn_c_grid, train_lbfgs_logreg

ROI_PROTOCOLS = ["roi.linear.gpfm", "roi.linear.uni", "roi.linear.sk", "roi.knn.dinov2", "roi.knn.cl2n"]


def _proba_from_predictions(path, names) -> np.ndarray:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])


def test_protocols_registered_with_pinned_versions() -> None:
    for name in ROI_PROTOCOLS:
        proto = create_protocol(name)
        assert proto.version == 1 and proto.family == "roi_classification"
        assert proto.resolved_config()["protocol"] == name
    assert set(ROI_PROTOCOLS) <= set(PROTOCOLS.names() if hasattr(PROTOCOLS, "names") else PROTOCOLS)
    assert create_protocol("roi.knn.dinov2").config.temperature == 0.07
    assert create_protocol("roi.linear.gpfm").config.max_epochs == 3000
    with pytest.raises(ValueError, match="unknown option"):
        create_protocol("roi.knn.cl2n", kk=3)


def test_knn_cl2n_equals_sklearn_on_cl2n_features(tmp_path) -> None:
    data = synthetic_roi(sep=0.7)
    (xtr, ytr), (xte, yte) = data.arrays("train"), data.arrays("test")
    mean = xtr.mean(0)

    def cl2n(x):
        x = x - mean
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    ref = KNeighborsClassifier(n_neighbors=20).fit(cl2n(xtr), ytr).predict_proba(cl2n(xte))
    result = create_protocol("roi.knn.cl2n").run(data, tmp_path, task="t", encoder="e")
    np.testing.assert_allclose(
        _proba_from_predictions(tmp_path / "predictions.csv", data.label_names), ref, atol=1e-6
    )
    assert result.metrics == pytest.approx(classification_metrics(yte, ref))


def test_knn_dinov2_equals_brute_force(tmp_path) -> None:
    data = synthetic_roi(sep=0.6, seed=1)
    (xtr, ytr), (xte, yte) = data.arrays("train"), data.arrays("test")
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    expected = {1: [], 20: []}
    for q in xte:
        sim = a @ (q / np.linalg.norm(q))
        top = np.argsort(-sim)[:20]
        w = np.exp(sim[top] / 0.07)
        w /= w.sum()
        for k in (1, 20):
            scores = np.bincount(ytr[top[:k]], weights=w[:k], minlength=3)
            expected[k].append(scores / scores.sum())
    result = create_protocol("roi.knn.dinov2").run(data, tmp_path, task="t", encoder="e")
    ref20 = classification_metrics(yte, np.array(expected[20]))
    ref1 = classification_metrics(yte, np.array(expected[1]))
    for name in ref20:
        assert result.metrics[name] == pytest.approx(ref20[name], abs=1e-9), name
        assert result.metrics[f"{name}@k1"] == pytest.approx(ref1[name], abs=1e-9), name


def _uni_objective(x, y, weight, bias, c):
    w = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    ce = torch.nn.functional.cross_entropy(torch.tensor(x, dtype=torch.float64) @ w.T + b, torch.tensor(y))
    loss = ce + 0.5 / c * w.norm()
    loss.backward()
    return loss.item(), w.grad.numpy(), b.grad.numpy()


def test_uni_lbfgs_reaches_the_stationary_point_of_its_objective() -> None:
    data = synthetic_roi(sep=1.5, d=64, seed=2)
    (x, y), (xte, _) = data.arrays("train", "val"), data.arrays("test")
    fit = train_lbfgs_logreg(x, y, xte, 3)
    assert fit.info["C"] == pytest.approx(64 * 3 / 100)
    assert np.linalg.norm(fit.weight) > 0.1  # interior optimum: the objective is smooth there
    loss, gw, gb = _uni_objective(x, y, fit.weight, fit.bias, fit.info["C"])
    assert max(np.abs(gw).max(), np.abs(gb).max()) < 1e-3
    assert fit.info["final_loss"] == pytest.approx(loss, rel=1e-4)
    logits = xte @ fit.weight.T + fit.bias
    np.testing.assert_allclose(fit.proba, torch.softmax(torch.tensor(logits), 1).numpy(), atol=1e-5)


def test_uni_unsquared_norm_can_zero_the_weights() -> None:
    """With the unsquared norm, W = 0 is optimal when ‖∇_W CE(0)‖ ≤ 1/(2C) (a group-lasso subgradient)."""
    data = synthetic_roi(sep=0.3, d=8, seed=2)
    (x, y), (xte, _) = data.arrays("train", "val"), data.arrays("test")
    c = 8 * 3 / 100
    _, grad_at_zero, _ = _uni_objective(x, y, np.zeros((3, 8)), np.log(np.bincount(y) / len(y)), c)
    assert np.linalg.norm(grad_at_zero) < 0.5 / c  # this data is in the zero regime
    fit = train_lbfgs_logreg(x, y, xte, 3)
    assert np.linalg.norm(fit.weight) < 1e-4


def test_gpfm_probe_selects_on_val_only(tmp_path) -> None:
    data = synthetic_roi(sep=0.5, seed=3)
    proto = create_protocol("roi.linear.gpfm", max_epochs=60, patience=10)
    first = proto.run(data, tmp_path / "a", task="t", encoder="e")
    curves = json.loads((tmp_path / "a" / "curves.json").read_text())
    sel = first.provenance["selection"]
    assert sel["selected_epoch"] == int(np.argmax(curves["val_metric"])) + 1
    assert sel["epochs_run"] <= min(60, sel["selected_epoch"] + 10)
    # scrambling the test labels changes nothing that was selected or predicted
    test = data.indices("test")
    data.labels[test] = np.random.default_rng(0).permutation(data.labels[test])
    second = proto.run(data, tmp_path / "b", task="t", encoder="e")
    assert second.provenance["selection"] == sel
    np.testing.assert_array_equal(
        _proba_from_predictions(tmp_path / "a" / "predictions.csv", data.label_names),
        _proba_from_predictions(tmp_path / "b" / "predictions.csv", data.label_names),
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_probe_c_modes(tmp_path) -> None:
    data = synthetic_roi(n_per_class=20, sep=0.5, seed=4)
    auto = create_protocol("roi.linear.sk", c_mode="auto", max_iter=200).run(
        data, tmp_path / "a", task="t", encoder="e"
    )
    scores = auto.provenance["fit"]["val_balanced_accuracy_by_C"]
    assert len(scores) == 45
    assert auto.provenance["fit"]["C"] == pytest.approx(sklearn_c_grid()[int(np.argmax(scores))])
    adaptive = create_protocol("roi.linear.sk", c_mode="adaptive").run(
        data, tmp_path / "b", task="t", encoder="e"
    )
    assert adaptive.provenance["fit"]["C"] == pytest.approx(16 * 3 / 100)
    fixed = create_protocol("roi.linear.sk").run(data, tmp_path / "c", task="t", encoder="e")
    assert fixed.provenance["fit"]["C"] == 0.5 and fixed.config["class_weight"] == "balanced"


def test_result_contract_artifacts_and_roundtrip(tmp_path) -> None:
    data = synthetic_roi(sep=0.6, seed=5)
    result = create_protocol("roi.knn.cl2n").run(data, tmp_path, task="task1", encoder="enc")
    n_test = data.counts()["test"]
    rows = list(csv.DictReader(open(tmp_path / result.artifacts["predictions"], newline="")))
    assert len(rows) == n_test and set(rows[0]) == {"id", "label", "prediction", "p_c0", "p_c1", "p_c2"}
    roc = json.loads((tmp_path / result.artifacts["roc_curves"]).read_text())
    assert set(roc["classes"]) == {"c0", "c1", "c2"} and roc["classes"]["c0"]["fpr"][0] == 0.0
    cm = json.loads((tmp_path / result.artifacts["confusion_matrix"]).read_text())
    assert cm["labels"] == ["c0", "c1", "c2"] and np.sum(cm["matrix"]) == n_test
    assert (
        result.primary_metric == "balanced_accuracy" and result.score == result.metrics["balanced_accuracy"]
    )
    for name, (low, high) in result.ci95.items():
        assert low <= result.metrics[name] <= high, name
    prov = result.provenance
    assert prov["split_hash"] == data.provenance["split_hash"] and prov["protocol_id"] == "roi.knn.cl2n@1"
    assert prov["code_version"] and prov["bootstrap"]["resamples"] == 1000
    result.save(tmp_path / "result.json")
    assert ProtocolResult.load(tmp_path / "result.json") == result


def test_bad_inputs_raise_one_clear_error(tmp_path) -> None:
    data = synthetic_roi()
    data.split[data.split == "val"] = "train"
    with pytest.raises(ValueError, match="needs non-empty val split"):
        create_protocol("roi.linear.gpfm").run(data, tmp_path, task="t", encoder="e")
    with pytest.raises(TypeError, match="takes RoiFeatures"):
        create_protocol("roi.knn.cl2n").run({"x": 1}, tmp_path, task="t", encoder="e")


@pytest.mark.realdata
@pytest.mark.parametrize("name", ROI_PROTOCOLS)
def test_real_lc25000_far_above_chance(name, lc25000_features, tmp_path) -> None:
    """Real EfficientNet-Lite0 features, duplicate-grouped split: chance is 0.33, measured 0.91-0.97."""
    data = lc25000_roi(lc25000_features)
    result = create_protocol(name).run(data, tmp_path, task="lc25000", encoder="efficientnet-lite0-imagenet")
    assert result.metrics["balanced_accuracy"] > 0.85
    assert result.metrics["macro_auroc"] > 0.95
    low, high = result.ci95["balanced_accuracy"]
    assert 0.75 < low <= result.metrics["balanced_accuracy"] <= high
