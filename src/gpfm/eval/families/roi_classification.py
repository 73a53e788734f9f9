"""The ROI classification family: three linear probes, two kNN definitions and SimpleShot few-shot.

Registers the ``roi_classification`` family, its protocols and the ``roi_images`` task loader
(:func:`gpfm.eval.data.roi.load_roi_images`, shared with the retrieval family).

Pinned defaults are the ``Config`` field defaults. Every protocol scores the
test split once with the model chosen without looking at test, and reports accuracy, balanced accuracy (the
primary metric), macro/weighted F1, quadratic κ and macro AUROC with 1,000-resample stratified percentile
bootstrap CIs, plus ``predictions``, ``roc_curves`` and ``confusion_matrix`` artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gpfm.atomic import write_json_atomic
from gpfm.eval.data.roi import RoiFeatures, load_roi_images
from gpfm.eval.family import Family, register_family
from gpfm.eval.metrics import classification_metrics, metrics_from_confusion
from gpfm.eval.metrics.retrieval import l2_normalize, nearest_neighbours
from gpfm.eval.protocol import Protocol, ProtocolResult, register_protocol, register_task_loader
from gpfm.eval.roi.common import check_roi_data, classification_result, provenance
from gpfm.eval.roi.fewshot import episode_confusions, episode_summary, sample_supports, simpleshot_predictions
from gpfm.eval.roi.probes import train_adamw_probe, train_lbfgs_logreg, train_sklearn_logreg

register_family(Family(
    "roi_classification", "classify ROI tiles from frozen features (linear probes, kNN, few-shot)"))
register_task_loader("roi_images")(load_roi_images)


class _RoiClassification(Protocol):
    family = "roi_classification"
    data_kind = RoiFeatures
    primary_metric = "balanced_accuracy"


@register_protocol
class LinearProbeGPFM(_RoiClassification):
    """``roi.linear.gpfm``: GPFM's AdamW linear probe, best val-macro-AUROC checkpoint [F]."""

    name = "roi.linear.gpfm"
    version = 1

    @dataclass
    class Config:
        """Pinned defaults."""

        lr: float = 5e-4
        min_lr: float = 1e-5
        weight_decay: float = 1e-5
        batch_size: int = 256
        max_epochs: int = 3000
        patience: int = 100
        init_std: float = 0.01
        seed: int = 0

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Train on train, select on val, score test."""
        data = check_roi_data(self, data, need_val=True)
        (xtr, ytr), (xva, yva), (xte, _) = data.arrays("train"), data.arrays("val"), data.arrays("test")
        c = self.config
        fit = train_adamw_probe(
            xtr,
            ytr,
            xva,
            yva,
            xte,
            data.num_classes,
            lr=c.lr,
            min_lr=c.min_lr,
            weight_decay=c.weight_decay,
            batch_size=c.batch_size,
            max_epochs=c.max_epochs,
            patience=c.patience,
            init_std=c.init_std,
            seed=c.seed,
        )
        write_json_atomic(Path(out_dir) / "curves.json", fit.curves)
        return classification_result(
            self,
            data,
            out_dir,
            task=task,
            encoder=encoder,
            proba=fit.proba,
            extra_provenance={"selection": fit.info, "seeds": [c.seed]},
            artifacts={"curves": "curves.json"},
        )


@register_protocol
class LinearProbeUNI(_RoiClassification):
    """``roi.linear.uni``: UNI's L-BFGS logistic regression, C = d·K/100, train+val combined."""

    name = "roi.linear.uni"
    version = 1

    @dataclass
    class Config:
        """Pinned defaults (``C`` None = d·K/100)."""

        max_iter: int = 1000
        C: float | None = None
        combine_trainval: bool = True

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Fit on train (+val), score test."""
        data = check_roi_data(self, data, need_val=False)
        fit_splits = ("train", "val") if self.config.combine_trainval else ("train",)
        (xtr, ytr), (xte, _) = data.arrays(*fit_splits), data.arrays("test")
        fit = train_lbfgs_logreg(
            xtr, ytr, xte, data.num_classes, max_iter=self.config.max_iter, C=self.config.C
        )
        return classification_result(
            self,
            data,
            out_dir,
            task=task,
            encoder=encoder,
            proba=fit.proba,
            extra_provenance={"fit": fit.info, "fit_splits": list(fit_splits)},
        )


@register_protocol
class LinearProbeSklearn(_RoiClassification):
    """``roi.linear.sk``: scikit-learn logistic regression, Patho-Bench defaults."""

    name = "roi.linear.sk"
    version = 1

    @dataclass
    class Config:
        """Pinned defaults: Patho-Bench ``linprobe.yaml`` (C 0.5, balanced class weights)."""

        c_mode: Literal["fixed", "adaptive", "auto"] = "fixed"
        C: float = 0.5
        class_weight: str | None = "balanced"
        max_iter: int = 10000
        seed: int = 0

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Fit on train (C swept on val for ``auto``), score test."""
        c = self.config
        data = check_roi_data(self, data, need_val=c.c_mode == "auto")
        (xtr, ytr), (xva, yva), (xte, _) = data.arrays("train"), data.arrays("val"), data.arrays("test")
        fit = train_sklearn_logreg(
            xtr,
            ytr,
            xva,
            yva,
            xte,
            data.num_classes,
            c_mode=c.c_mode,
            C=c.C,
            class_weight=c.class_weight,
            max_iter=c.max_iter,
            seed=c.seed,
        )
        return classification_result(
            self,
            data,
            out_dir,
            task=task,
            encoder=encoder,
            proba=fit.proba,
            extra_provenance={"fit": fit.info, "seeds": [c.seed]},
        )


def knn_class_scores(
    neighbour_labels: np.ndarray, weights: np.ndarray, k: int, num_classes: int
) -> np.ndarray:
    """Σ of the first k neighbours' weights per class, normalised to probabilities (rows of (Q, K))."""
    q = len(neighbour_labels)
    scores = np.zeros((q, num_classes))
    np.add.at(scores, (np.repeat(np.arange(q), k), neighbour_labels[:, :k].ravel()), weights[:, :k].ravel())
    return scores / scores.sum(axis=1, keepdims=True)


def _suffixed(metrics: dict[str, float], suffix: str) -> dict[str, float]:
    return {f"{name}{suffix}": value for name, value in metrics.items()}


@register_protocol
class KnnDinov2(_RoiClassification):
    """``roi.knn.dinov2``: cosine kNN with softmax(sim/T) weights, k ∈ {1, 20}, k = 20 primary [F].

    Neighbour weights are softmax(sim/T) over the max(k) nearest train items; for each k the class score is
    the sum of the first k weights of that class (normalised to probabilities for AUROC); prediction is the
    arg-max. Metrics of non-primary k carry an ``@k<k>`` suffix.
    """

    name = "roi.knn.dinov2"
    version = 1

    @dataclass
    class Config:
        """Pinned defaults."""

        ks: tuple[int, ...] = (1, 20)
        primary_k: int = 20
        temperature: float = 0.07
        gallery: Literal["train", "train+val"] = "train"

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Vote with the train gallery for every test item."""
        data = check_roi_data(self, data, need_val=False)
        c = self.config
        if c.primary_k not in c.ks:
            raise ValueError(f"roi.knn.dinov2: primary_k {c.primary_k} must be one of ks {list(c.ks)}")
        (xg, yg), (xq, yq) = data.arrays(*c.gallery.split("+")), data.arrays("test")
        kmax = min(max(c.ks), len(xg))
        idx, sim = nearest_neighbours(l2_normalize(xq), l2_normalize(xg), kmax, metric="cosine")
        logits = sim / c.temperature
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        labels = yg[idx]
        extra, primary = {}, None
        for k in c.ks:
            proba = knn_class_scores(labels, weights, min(k, kmax), data.num_classes)
            if k == c.primary_k:
                primary = proba
            else:
                extra.update(_suffixed(classification_metrics(yq, proba), f"@k{k}"))
        return classification_result(
            self,
            data,
            out_dir,
            task=task,
            encoder=encoder,
            proba=primary,
            extra_metrics=extra,
            extra_provenance={"gallery": c.gallery, "k_used": kmax},
        )


@register_protocol
class KnnCL2N(_RoiClassification):
    """``roi.knn.cl2n``: UNI's kNN — centre on the train mean, L2-normalise, Euclidean, k = 20 uniform.

    Probabilities are the neighbour vote fractions (scikit-learn ``predict_proba``); the prediction is the
    arg-max (lowest class index on ties).
    """

    name = "roi.knn.cl2n"
    version = 1

    @dataclass
    class Config:
        """Pinned defaults."""

        k: int = 20
        gallery: Literal["train", "train+val"] = "train"

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Vote with the train gallery for every test item."""
        data = check_roi_data(self, data, need_val=False)
        (xg, yg), (xq, _) = data.arrays(*self.config.gallery.split("+")), data.arrays("test")
        mean = xg.mean(axis=0, keepdims=True)
        k = min(self.config.k, len(xg))
        idx, _ = nearest_neighbours(l2_normalize(xq - mean), l2_normalize(xg - mean), k, metric="l2")
        proba = knn_class_scores(yg[idx], np.ones(idx.shape), k, data.num_classes)
        return classification_result(
            self,
            data,
            out_dir,
            task=task,
            encoder=encoder,
            proba=proba,
            extra_provenance={"gallery": self.config.gallery, "k_used": k},
        )


@register_protocol
class SimpleShot(Protocol):
    """SimpleShot few-shot evaluation (UNI / THUNDER definition, CL2N on the support mean)."""

    name = "roi.fewshot.simpleshot"
    version = 1
    family = "roi_classification"
    data_kind = RoiFeatures
    primary_metric = "balanced_accuracy"

    @dataclass
    class Config:
        """Pinned defaults."""

        shots: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
        episodes: int = 1000
        primary_shots: int = 16
        seed: int = 0

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Evaluate every feasible shot count on the test split."""
        data = check_roi_data(self, data, need_val=False)
        c = self.config
        (xtr, ytr), (xte, yte) = data.arrays("train"), data.arrays("test")
        members = [np.flatnonzero(ytr == k) for k in range(data.num_classes)]
        smallest = min(len(m) for m in members)
        if smallest == 0:
            empty = [data.label_names[k] for k, m in enumerate(members) if not len(m)]
            raise ValueError(
                f"roi.fewshot.simpleshot: classes {empty} have no train items; all classes are needed"
            )
        feasible = [n for n in c.shots if n <= smallest]
        if not feasible:
            raise ValueError(
                f"roi.fewshot.simpleshot: no shot count in {list(c.shots)} fits {smallest} train items"
            )
        flags = []
        dropped = [n for n in c.shots if n > smallest]
        if dropped:
            flags.append(f"shots {dropped} skipped (smallest class has {smallest} train items)")
        primary = c.primary_shots if c.primary_shots in feasible else max(feasible)
        if primary != c.primary_shots:
            flags.append(f"headline at {primary} shots (primary_shots {c.primary_shots} not feasible)")
        rng = np.random.default_rng(c.seed)
        metrics: dict[str, float] = {}
        sds: dict[str, float] = {}
        ci95: dict[str, tuple[float, float]] = {}
        curve: dict[str, Any] = {"shots": [], "balanced_accuracy": [], "macro_f1": []}
        for n in feasible:
            preds = simpleshot_predictions(xtr, sample_supports(members, n, c.episodes, rng), xte)
            scores = metrics_from_confusion(episode_confusions(yte, preds, data.num_classes))
            curve["shots"].append(n)
            for name in ("balanced_accuracy", "macro_f1"):
                summary = episode_summary(scores[name])
                key = f"{name}@{n}shot"
                metrics[key], sds[key], ci95[key] = (
                    summary["mean"],
                    summary["sd"],
                    (summary["p2.5"], summary["p97.5"]),
                )
                curve[name].append(summary)
                if n == primary:
                    metrics[name], sds[name], ci95[name] = metrics[key], sds[key], ci95[key]
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "fewshot.json", curve)
        return self.make_result(
            task=task,
            encoder=encoder,
            metrics=metrics,
            metrics_sd=sds,
            ci95=ci95,
            provenance=provenance(
                self,
                data,
                seeds=[c.seed],
                episodes=c.episodes,
                shots_run=feasible,
                primary_shots=primary,
                interval="episode percentiles 2.5/97.5",
            ),
            artifacts={"fewshot": "fewshot.json"},
            flags=flags,
        )
