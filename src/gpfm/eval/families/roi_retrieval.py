"""ROI retrieval: three incompatible definitions, each under its own name.

Queries are the test split and the gallery (keys) is the train split in all three; nothing is selected, so
val is unused. Metric formulas are in :mod:`gpfm.eval.metrics.retrieval`. Intervals are 1,000-resample
class-stratified percentile bootstraps over queries (seed 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gpfm.atomic import write_json_atomic
from gpfm.eval.data.roi import RoiFeatures
from gpfm.eval.family import Family, register_family
from gpfm.eval.metrics import (
    bootstrap_classification,
    confusion_counts,
    metrics_from_confusion,
    resample_weights,
)
from gpfm.eval.metrics.retrieval import (
    l2_normalize,
    majority_vote,
    nearest_neighbours,
    rank_weighted_class_scores,
    retrieval_hits,
    topk_macro_accuracy,
)
from gpfm.eval.protocol import Protocol, ProtocolResult, register_protocol
from gpfm.eval.roi.common import check_roi_data, classification_result, provenance

register_family(Family(
    "roi_retrieval", "retrieve ROI tiles of the same class (the roi_images loader of the ROI family)"))


def _ci(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_mean_ci(per_query: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Percentile CI of the mean of a per-query score over (B, Q) resample multiplicities."""
    return _ci(weights @ per_query / len(per_query))


def bootstrap_macro_ci(hit: np.ndarray, labels: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Percentile CI of the class-averaged hit rate (macro accuracy) over (B, Q) stratified multiplicities."""
    per_class = [(w[:, labels == c] @ hit[labels == c]) / w[:, labels == c].sum(1) for c in np.unique(labels)]
    return _ci(np.mean(per_class, axis=0))


def macro_jaccard(cm: np.ndarray) -> float:
    """Mean over classes occurring in truth or prediction of TP / (TP + FP + FN)."""
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    occurs = union > 0
    return float((tp[occurs] / union[occurs]).mean())


class _RoiRetrieval(Protocol):
    family = "roi_retrieval"
    data_kind = RoiFeatures


@register_protocol
class RetrievalPathoBench(_RoiRetrieval):
    """``roi.retrieval.pathobench``: acc@k, mv@k and mAP@k for k ∈ {1, 5, 10}, overall and per class."""

    name = "roi.retrieval.pathobench"
    version = 1
    primary_metric = "acc@1"

    @dataclass
    class Config:
        """Pinned defaults: L2 distance on raw features, no centring."""

        ks: tuple[int, ...] = (1, 5, 10)
        similarity: Literal["l2", "cosine"] = "l2"
        centering: bool = False

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Retrieve train items for every test query."""
        data = check_roi_data(self, data, need_val=False)
        c = self.config
        (xg, yg), (xq, yq) = data.arrays("train"), data.arrays("test")
        if c.centering:  # centring implies L2-normalisation (Patho-Bench)
            mean = xg.mean(0, keepdims=True)
            xg, xq = l2_normalize(xg - mean), l2_normalize(xq - mean)
        elif c.similarity == "cosine":
            xg, xq = l2_normalize(xg), l2_normalize(xq)
        idx, _ = nearest_neighbours(xq, xg, max(c.ks), metric=c.similarity)
        neighbour_labels = yg[idx]
        metrics: dict[str, float] = {}
        ci95: dict[str, tuple[float, float]] = {}
        per_class: dict[str, dict[str, float]] = {name: {} for name in data.label_names}
        weights = resample_weights(len(yq), strata=yq)  # one set of resamples for every metric
        for k in c.ks:
            for short, values in retrieval_hits(yq, neighbour_labels, k).items():
                key = f"{'map' if short == 'ap' else short}@{k}"
                metrics[key] = float(values.mean())
                ci95[key] = bootstrap_mean_ci(values, weights)
                for cls in np.unique(yq):
                    per_class[data.label_names[cls]][key] = float(values[yq == cls].mean())
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "retrieval_per_class.json", per_class)
        return self.make_result(
            task=task,
            encoder=encoder,
            metrics=metrics,
            ci95=ci95,
            provenance=provenance(self, data, query="test", gallery="train"),
            artifacts={"retrieval_per_class": "retrieval_per_class.json"},
        )


@register_protocol
class RetrievalThunder(_RoiRetrieval):
    """``roi.retrieval.thunder``: cosine on L2-normalised features, majority vote at k ∈ {1, 3, 5, 10}."""

    name = "roi.retrieval.thunder"
    version = 1
    primary_metric = "accuracy@1"

    @dataclass
    class Config:
        """Pinned defaults."""

        ks: tuple[int, ...] = (1, 3, 5, 10)

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Majority-vote prediction per k, scored with accuracy, balanced accuracy, macro F1 and Jaccard."""
        data = check_roi_data(self, data, need_val=False)
        (xg, yg), (xq, yq) = data.arrays("train"), data.arrays("test")
        idx, _ = nearest_neighbours(l2_normalize(xq), l2_normalize(xg), max(self.config.ks), metric="cosine")
        metrics: dict[str, float] = {}
        ci95: dict[str, tuple[float, float]] = {}
        k_cls = data.num_classes
        for k in self.config.ks:
            pred = majority_vote(yg[idx[:, :k]], k_cls)
            cm = confusion_counts(yq, pred, k_cls)
            scores = metrics_from_confusion(cm)
            onehot = np.eye(k_cls)[pred]
            cis = bootstrap_classification(yq, onehot, metrics=("accuracy", "balanced_accuracy", "macro_f1"))
            for name in ("accuracy", "balanced_accuracy", "macro_f1"):
                metrics[f"{name}@{k}"] = float(scores[name])
                ci95[f"{name}@{k}"] = cis[name].as_tuple()
            metrics[f"macro_jaccard@{k}"] = macro_jaccard(cm)
        return self.make_result(
            task=task,
            encoder=encoder,
            metrics=metrics,
            ci95=ci95,
            provenance=provenance(
                self, data, query="test", gallery="train", vote_tie_break="best-ranked class"
            ),
        )


@register_protocol
class RetrievalGPFM(_RoiRetrieval):
    """``roi.retrieval.gpfm``: z-scored Euclidean search of K neighbours, rank-weighted softmax class scores.

    Features are z-scored with the train mean and unbiased (ddof 1) std (a zero std is replaced by 1 so
    constant dimensions drop out instead of producing NaN). With K classes, K neighbours are retrieved and
    rank r weighs 1 − 0.1·(r − 1), which is ≤ 0 from r = 11: more than 10 classes raises unless
    ``allow_nonpositive_weights``. Reports macro top-1/3/5 accuracy (t ≤ K) plus the classification set of
    the class scores.
    """

    name = "roi.retrieval.gpfm"
    version = 1
    primary_metric = "top1_macro_accuracy"

    @dataclass
    class Config:
        """Pinned defaults."""

        tops: tuple[int, ...] = (1, 3, 5)
        allow_nonpositive_weights: bool = False

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Score class rankings of the test queries against the train gallery."""
        data = check_roi_data(self, data, need_val=False)
        k_cls = data.num_classes
        if k_cls > 10 and not self.config.allow_nonpositive_weights:
            raise ValueError(
                f"roi.retrieval.gpfm: {k_cls} classes give rank weights 1 − 0.1·(r − 1) ≤ 0 beyond rank 10; "
                "set allow_nonpositive_weights=true to run GPFM's definition anyway"
            )
        (xg, yg), (xq, yq) = data.arrays("train"), data.arrays("test")
        mean = xg.mean(0, keepdims=True)
        std = xg.std(0, ddof=1, keepdims=True) if len(xg) > 1 else np.ones_like(mean)
        std = np.where(std > 0, std, 1.0)
        idx, _ = nearest_neighbours((xq - mean) / std, (xg - mean) / std, k_cls, metric="l2")
        proba = rank_weighted_class_scores(yg[idx], k_cls)
        extra: dict[str, float] = {}
        tops = [t for t in self.config.tops if t <= k_cls]
        for t in tops:
            extra[f"top{t}_macro_accuracy"] = topk_macro_accuracy(yq, proba, t)
        result = classification_result(
            self,
            data,
            out_dir,
            task=task,
            encoder=encoder,
            proba=proba,
            extra_metrics=extra,
            extra_provenance={"query": "test", "gallery": "train", "neighbours": k_cls},
        )
        order = np.argsort(-proba, axis=1, kind="stable")
        weights = resample_weights(len(yq), strata=yq)
        for t in tops:
            hit = (order[:, :t] == yq[:, None]).any(1).astype(np.float64)
            result.ci95[f"top{t}_macro_accuracy"] = bootstrap_macro_ci(hit, yq, weights)
        if any(t > k_cls for t in self.config.tops):
            result.flags.append(f"top-t > {k_cls} classes not reported")
        return result
