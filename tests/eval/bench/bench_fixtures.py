"""Test-only protocols, task loaders and a unit suite for the runner, aggregation and report tests.

They are registered only for the duration of a test (``bench_registry`` fixture) so that other tests that
iterate over the real registries never see them. Each one does a real, small computation (nearest centroid,
kNN, Kaplan–Meier, exact-match answers) with scikit-learn / scikit-survival, and writes every artifact kind
the report knows how to draw.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score, roc_curve
from sklearn.neighbors import KNeighborsClassifier

from gpfm.eval.protocol import PROTOCOLS, TASK_LOADERS, Protocol, ProtocolResult, TaskContext

CALLS: Counter[str] = Counter()
CLASSES = ["aca", "benign", "scc"]


def _blobs(block: dict[str, Any], ctx: TaskContext) -> dict[str, np.ndarray]:
    """Three Gaussian classes whose separation depends on the encoder (``separation: {enc: float}``)."""
    CALLS[f"load:{ctx.encoder}"] += 1
    sep = block.get("separation", 2.0)
    sep = float(sep.get(ctx.encoder, 1.0)) if isinstance(sep, dict) else float(sep)
    n = int(block.get("n_per_class", 30))
    rng = np.random.default_rng(zlib.crc32(f"{ctx.encoder}:{block.get('seed', 0)}".encode()))
    centres = np.eye(len(CLASSES), 8) * sep

    def draw() -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(len(CLASSES)), n)
        return centres[y] + rng.normal(size=(len(y), 8)), y

    (xtr, ytr), (xte, yte) = draw(), draw()
    return {"train_x": xtr, "train_y": ytr, "test_x": xte, "test_y": yte}


def _survival(block: dict[str, Any], ctx: TaskContext) -> dict[str, np.ndarray]:
    """Times exponential in a risk that the encoder's features recover with noise ``noise: {enc: float}``."""
    CALLS[f"load:{ctx.encoder}"] += 1
    rng = np.random.default_rng(zlib.crc32(ctx.encoder.encode()))
    noise = block.get("noise", 1.0)
    noise = float(noise.get(ctx.encoder, 1.0)) if isinstance(noise, dict) else float(noise)
    risk = rng.normal(size=120)
    time = rng.exponential(np.exp(-risk)) * 24
    event = rng.random(120) < 0.7
    return {"risk": risk + noise * rng.normal(size=120), "time": time, "event": event}


@dataclass
class CentroidConfig:
    shrink: float = 0.0
    fail: bool = False
    nan: bool = False


def _classification_result(
    proto: Protocol, data: dict[str, np.ndarray], proba: np.ndarray, out_dir: Path, task: str, encoder: str
) -> ProtocolResult:
    y = data["test_y"]
    pred = proba.argmax(1)
    bacc = balanced_accuracy_score(y, pred)
    auc = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    roc = {}
    for k, name in enumerate(CLASSES):
        fpr, tpr, _ = roc_curve(y == k, proba[:, k])
        roc[name] = {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "auc": float(roc_auc_score(y == k, proba[:, k])),
        }
    (out_dir / "roc.json").write_text(json.dumps({"classes": roc}))
    cm = confusion_matrix(y, pred, labels=range(len(CLASSES)))
    (out_dir / "cm.json").write_text(json.dumps({"labels": CLASSES, "matrix": cm.tolist()}))
    epochs = list(range(10))
    (out_dir / "curves.json").write_text(
        json.dumps(
            {
                "epoch": epochs,
                "train_loss": [1 / (e + 1) for e in epochs],
                "val_metric": [bacc * (1 - 0.5 ** (e + 1)) for e in epochs],
            }
        )
    )
    boot = np.random.default_rng(0).integers(0, len(y), size=(200, len(y)))
    vals = [balanced_accuracy_score(y[i], pred[i]) for i in boot]
    return ProtocolResult(
        protocol=proto.name,
        protocol_version=proto.version,
        task=task,
        encoder=encoder,
        primary_metric=proto.primary_metric,
        metrics={"balanced_accuracy": bacc, "macro_auroc": auc, "error_rate": 1 - float((pred == y).mean())},
        ci95={"balanced_accuracy": (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5)))},
        config=proto.resolved_config(),
        provenance={"seed": 0},
        artifacts={"roc_curves": "roc.json", "confusion_matrix": "cm.json", "curves": "curves.json"},
    )


class CentroidProtocol(Protocol):
    """Nearest class centroid with softmax(-distance) probabilities."""

    name = "testonly.centroid"
    version = 3
    family = "roi_classification"
    Config = CentroidConfig
    primary_metric = "balanced_accuracy"

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        CALLS[f"{self.name}:{task}:{encoder}"] += 1
        CALLS["protocol_runs"] += 1
        if self.config.fail:
            raise RuntimeError("deliberate failure for the test\nsecond line that must not reach the table")
        cents = np.stack([data["train_x"][data["train_y"] == k].mean(0) for k in range(len(CLASSES))])
        dist = ((data["test_x"][:, None, :] - cents[None]) ** 2).sum(-1) * (1 - self.config.shrink)
        logits = -dist - (-dist).max(1, keepdims=True)
        proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        result = _classification_result(self, data, proba, out_dir, task, encoder)
        if self.config.nan:
            result.metrics["balanced_accuracy"] = float("nan")
        return result


@dataclass
class KnnConfig:
    k: int = 5


class KnnProtocol(Protocol):
    """scikit-learn kNN, uniform votes."""

    name = "testonly.knn-faithful"
    version = 1
    family = "roi_classification"
    Config = KnnConfig
    primary_metric = "balanced_accuracy"

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        CALLS["protocol_runs"] += 1
        knn = KNeighborsClassifier(self.config.k).fit(data["train_x"], data["train_y"])
        return _classification_result(self, data, knn.predict_proba(data["test_x"]), out_dir, task, encoder)


@dataclass
class SurvConfig:
    groups: int = 2


class SurvivalProtocol(Protocol):
    """C-index of a given risk, KM curves of risk halves (scikit-survival)."""

    name = "testonly.survival"
    version = 2
    family = "survival"
    Config = SurvConfig
    primary_metric = "c_index"

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        from sksurv.metrics import concordance_index_censored
        from sksurv.nonparametric import kaplan_meier_estimator

        CALLS["protocol_runs"] += 1
        cidx = concordance_index_censored(data["event"], data["time"], data["risk"])[0]
        high = data["risk"] > np.median(data["risk"])
        groups = {}
        for name, mask in (("low risk", ~high), ("high risk", high)):
            t, s = kaplan_meier_estimator(data["event"][mask], data["time"][mask])
            groups[name] = {"time": t.tolist(), "survival": s.tolist(), "n": int(mask.sum())}
        (out_dir / "km.json").write_text(json.dumps({"groups": groups, "logrank_p": 0.01}))
        return ProtocolResult(
            protocol=self.name,
            protocol_version=self.version,
            task=task,
            encoder=encoder,
            primary_metric="c_index",
            metrics={"c_index": float(cidx)},
            metrics_sd={"c_index": 0.02},
            runs=[{"c_index": float(cidx)}],
            config=self.resolved_config(),
            artifacts={"km_curves": "km.json"},
        )


class TextProtocol(Protocol):
    """Answers 'yes' to every closed question; writes samples, VQA breakdown and an attention file."""

    name = "testonly.text"
    version = 1
    family = "vqa"
    Config = SurvConfig
    primary_metric = "overall_accuracy"

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        import h5py

        CALLS["protocol_runs"] += 1
        answers = ["yes", "no", "yes", "yes"]
        closed_acc = float(np.mean([a == "yes" for a in answers]))
        (out_dir / "vqa.json").write_text(
            json.dumps({"closed": {"accuracy": closed_acc, "n": 4}, "open": {"accuracy": 0.0, "n": 2}})
        )
        (out_dir / "samples.json").write_text(
            json.dumps(
                [
                    {
                        "id": f"s{i}",
                        "reference": "lung adenocarcinoma <b>acinar</b>",
                        "generated": "lung adenocarcinoma",
                    }
                    for i in range(7)
                ]
            )
        )
        with h5py.File(out_dir / "attention.h5", "w") as fh:
            fh["slide-a"] = np.array([0.7, 0.1, 0.1, 0.1])
            fh["slide-b"] = np.full(10, 0.1)
        return ProtocolResult(
            protocol=self.name,
            protocol_version=self.version,
            task=task,
            encoder=encoder,
            primary_metric="overall_accuracy",
            metrics={"overall_accuracy": closed_acc * 4 / 6},
            artifacts={"vqa_breakdown": "vqa.json", "samples": "samples.json", "attention": "attention.h5"},
        )


TEST_PROTOCOLS = (CentroidProtocol, KnnProtocol, SurvivalProtocol, TextProtocol)
TEST_LOADERS = {"testonly_blobs": _blobs, "testonly_survival": _survival}


@contextlib.contextmanager
def registered_test_protocols() -> Iterator[Counter[str]]:
    """Register the test-only protocols and loaders inside the block; yields the call counter (reset)."""
    from gpfm.eval.protocol import PROTOCOLS

    PROTOCOLS.names()  # the real families first, so the registry is complete

    with pytest.MonkeyPatch.context() as mp:
        for cls in TEST_PROTOCOLS:
            mp.setitem(PROTOCOLS._items, cls.name, cls)
        for kind, fn in TEST_LOADERS.items():
            mp.setitem(TASK_LOADERS._items, kind, fn)
        CALLS.clear()
        yield CALLS


@pytest.fixture
def bench_registry() -> Iterator[Counter[str]]:
    """The test-only registrations for one test."""
    with registered_test_protocols() as calls:
        yield calls


SUITE_YAML = """
name: unit-suite
description: test-only protocols on synthetic features
references:
  source: made-up numbers for the report test
  average_rank: {gpfm: 1.36, uni: 2.96}
paper: {name: Made-up benchmark, tasks: 9}
not_reproducible:
  - {id: private-cohort, family: wsi_classification, reason: a hospital cohort nobody else can get}
variables:
  BLOBS_SEED: "0"
defaults:
  protocol_options:
    testonly.centroid: {shrink: 0.0}
tasks:
  - id: easy
    family: roi_classification
    protocol: [testonly.centroid, testonly.knn-faithful]
    protocol_options: {testonly.knn-faithful: {k: 3}}
    reference: {gpfm: 0.5, uni: 0.75}
    data: {kind: testonly_blobs, separation: {gpfm: 4.0, resnet50-imagenet: 2.0}, seed: "${BLOBS_SEED}"}
  - id: hard
    family: roi_classification
    subgroup: external
    protocol: testonly.centroid
    data: {kind: testonly_blobs, separation: {gpfm: 0.5, resnet50-imagenet: 1.5}, seed: "1"}
  - id: surv
    family: survival
    protocol: testonly.survival
    data: {kind: testonly_survival, noise: {gpfm: 0.3, resnet50-imagenet: 2.0}}
  - id: sat
    family: roi_classification
    saturated: true
    protocol: testonly.centroid
    data: {kind: testonly_blobs, separation: 9.0, seed: "2"}
  - id: vqa
    family: vqa
    protocol: testonly.text
    data: {kind: testonly_blobs}
  - id: nodata
    family: roi_classification
    protocol: testonly.centroid
    data: {kind: testonly_blobs, root: "${DATA_ROOT}/not-downloaded-yet"}
"""


@pytest.fixture
def unit_suite(tmp_path: Path) -> Path:
    """A suite file using the test-only protocols (write it; returns its path)."""
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_YAML)
    return path
