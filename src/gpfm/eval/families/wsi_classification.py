"""WSI classification by MIL on per-tile features: ``wsi.abmil.gpfm`` [F] and the other aggregators.

Pinned defaults:

* ``wsi.abmil.gpfm`` [F]: non-gated ABMIL, Linear(d→512)+ReLU+Dropout 0.25, attention 512→128→1; Adam lr
  2e-4, wd 1e-4, batch 1 bag with all tiles, ≤ 100 epochs, class-balanced bag sampling, cross-entropy, seed
  1024; early stopping on validation error, patience 20, allowed after epoch 50; best-val-error checkpoint.
* ``wsi.abmil.gated``: the same with gated attention. ``wsi.transmil``: TransMIL (512-d, 2 Nyström layers,
  PPEG, class token) with the ``wsi.abmil.gpfm`` optimiser. ``wsi.meanpool`` / ``wsi.maxpool``: the ABMIL
  trunk, mean or max pooling, a linear head, same optimiser.
* ``wsi.linear.pooled`` (Patho-Bench style): mean-pooled bag features → ``roi.linear.sk`` logistic regression
  (C 0.5, balanced class weights); validation joins training unless C is swept (``c_mode: auto``).

Splits: the task's folds when it declares them, else ``n_folds`` (5) stratified case-grouped folds, each with
``val_fraction`` (0.125, i.e. 7:1:2) of its training cases for validation. Several ``seeds`` → every metric is
the mean over folds × seeds, with the sd beside it; 95% CIs are percentile bootstraps (1,000 class-stratified
resamples) of the pooled out-of-fold test predictions of the first seed. Attention scores of every test bag
(first seed) are saved for heatmaps.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpfm.atomic import atomic_path, write_json_atomic
from gpfm.eval.data.bags import BagDataset, load_slide_task
from gpfm.eval.family import Family, register_family
from gpfm.eval.metrics import (
    bootstrap_classification,
    classification_metrics,
    confusion_matrix_artifact,
    roc_curves,
)
from gpfm.eval.metrics.bootstrap import summarize_run_dicts
from gpfm.eval.mil import create_aggregator
from gpfm.eval.mil.common import check_bags, resolve_folds, save_model, slide_provenance, write_attention
from gpfm.eval.protocol import Protocol, ProtocolResult, register_protocol, register_task_loader
from gpfm.eval.training import Objective, TrainConfig, cpu_threads, fit, predict, seed_everything
from gpfm.runtime import resolve_device

register_family(Family(
    "wsi_classification", "classify whole slides (or cases) by multiple-instance learning on tile features"))
register_task_loader("slide_h5")(load_slide_task)


@dataclass
class MILConfig:
    """Pinned defaults of ``wsi.abmil.gpfm`` [F]; the other MIL protocols change only the aggregator.

    Attributes:
        aggregator: registered aggregator name.
        aggregator_options: architecture options passed to the aggregator.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        max_epochs: epoch budget.
        patience: early-stopping patience (epochs).
        min_epochs: stopping allowed only after this 0-based epoch.
        monitor: validation monitor, ``error`` (1 − accuracy) [F], ``loss`` or ``auroc`` (1 − macro AUROC).
        balanced_sampling: class-balanced bag sampling.
        max_tiles_train: random tiles per bag and training step (None = all, as GPFM).
        seeds: training seeds; results are averaged over folds × seeds.
        n_folds: folds made when the task declares none.
        val_fraction: share of a fold's training cases used for validation.
        split_seed: seed of the folds made here.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:i]``.
        num_threads: CPU threads while training/predicting (None = as the caller set them).
        bootstrap_resamples: resamples of the pooled CI (0 = no CI).
        save_attention: write the ``attention`` artifact.
    """

    aggregator: str = "abmil"
    aggregator_options: dict[str, Any] = field(
        default_factory=lambda: {"hidden": 512, "attn_dim": 128, "dropout": 0.25}
    )
    lr: float = 2e-4
    weight_decay: float = 1e-4
    max_epochs: int = 100
    patience: int = 20
    min_epochs: int = 50
    monitor: str = "error"
    balanced_sampling: bool = True
    max_tiles_train: int | None = None
    seeds: tuple[int, ...] = (1024,)
    n_folds: int = 5
    val_fraction: float = 0.125
    split_seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    bootstrap_resamples: int = 1000
    save_attention: bool = True


def classification_objective(labels: np.ndarray, monitor: str) -> Objective:
    """Cross-entropy training; the validation monitor is error, loss or 1 − macro AUROC."""
    if monitor not in ("error", "loss", "auroc"):
        raise ValueError(f"monitor {monitor!r} is unknown; use 'error' [F], 'loss' or 'auroc'")
    y_all = torch.as_tensor(labels, dtype=torch.long)

    def loss(outputs: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return F.cross_entropy(outputs, y_all[rows].to(outputs.device))

    def score(outputs: torch.Tensor, rows: np.ndarray) -> tuple[float, float]:
        y = y_all[rows]
        val_loss = float(F.cross_entropy(outputs, y))
        if monitor == "error":
            return float((outputs.argmax(1) != y).float().mean()), val_loss
        if monitor == "loss":
            return val_loss, val_loss
        auc = classification_metrics(y.numpy(), torch.softmax(outputs, 1).numpy())["macro_auroc"]
        return (1.0 - auc if np.isfinite(auc) else 1.0), val_loss

    return Objective(loss, score, np.asarray(labels))


def _write_predictions(path: Path, rows: list[dict[str, Any]], names: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "label", "prediction", *[f"p_{n}" for n in names], "fold", "seed"])
        for r in rows:
            writer.writerow(
                [
                    r["id"],
                    names[r["label"]],
                    names[int(np.argmax(r["proba"]))],
                    *[f"{p:.6g}" for p in r["proba"]],
                    r["fold"],
                    r["seed"],
                ]
            )


class _MILProtocol(Protocol):
    """Shared ``run`` of the MIL classification protocols."""

    data_kind = BagDataset
    family = "wsi_classification"
    version = 1
    primary_metric = "macro_auroc"
    Config = MILConfig

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Train and test over folds × seeds; write predictions, ROC, confusion, attention and curves."""
        cfg = self.config
        data = check_bags(self, data, survival=False)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = data.label_names or [str(i) for i in range(data.n_classes)]
        folds = resolve_folds(
            data, data.labels, n_folds=cfg.n_folds, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed
        )
        device = str(resolve_device(cfg.device))
        objective = classification_objective(data.labels, cfg.monitor)
        runs, predictions, curves_all, attention = [], [], [], {}
        for seed in cfg.seeds:
            for fold in folds:
                seed_everything(seed)
                model = create_aggregator(
                    cfg.aggregator, in_dim=data.dim, n_outputs=len(names), **cfg.aggregator_options
                )
                train_cfg = TrainConfig(
                    lr=cfg.lr,
                    weight_decay=cfg.weight_decay,
                    max_epochs=cfg.max_epochs,
                    patience=cfg.patience,
                    min_epochs=cfg.min_epochs,
                    balanced_sampling=cfg.balanced_sampling,
                    max_tiles_train=cfg.max_tiles_train,
                    seed=seed,
                    device=device,
                    num_threads=cfg.num_threads,
                )
                fitted = fit(model, data.bags, fold.train, fold.val, objective, train_cfg)
                first_seed = seed == cfg.seeds[0]
                if first_seed:  # reusable on any slide: gpfm heatmap --source attention --model
                    save_model(out_dir, fold.name, model, cfg.aggregator, cfg.aggregator_options, data.dim,
                               len(names), names, encoder, "classification")
                with cpu_threads(cfg.num_threads):
                    logits, attn = predict(model, data.bags, fold.test, device, with_attention=first_seed)
                proba = torch.softmax(logits, 1).numpy()
                y = data.labels[fold.test]
                run = classification_metrics(y, proba, names)
                runs.append(
                    {
                        **run,
                        "fold": fold.name,
                        "seed": seed,
                        "best_epoch": fitted.best_epoch,
                        "epochs_run": fitted.epochs_run,
                    }
                )
                curves_all.append(
                    {
                        "fold": fold.name,
                        "seed": seed,
                        "best_epoch": fitted.best_epoch,
                        "monitor": cfg.monitor,
                        **fitted.curves,
                    }
                )
                for j, i in enumerate(fold.test):
                    predictions.append(
                        {
                            "id": data.ids[i],
                            "label": int(y[j]),
                            "proba": proba[j],
                            "fold": fold.name,
                            "seed": seed,
                            "row": int(i),
                        }
                    )
                    if first_seed and attn[j] is not None:
                        attention[data.ids[i]] = attn[j]
        metric_runs = [{k: v for k, v in r.items() if k in run} for r in runs]
        metrics, metrics_sd = summarize_run_dicts(metric_runs)
        if len(runs) == 1:
            metrics_sd = {}
        artifacts, ci95, flags, extra = self._artifacts(
            out_dir, data, names, predictions, curves_all, attention
        )
        return self.make_result(
            task=task,
            encoder=encoder,
            metrics=metrics,
            metrics_sd=metrics_sd,
            ci95=ci95,
            runs=runs,
            artifacts=artifacts,
            flags=flags,
            provenance=slide_provenance(
                self,
                data,
                folds,
                seeds=list(cfg.seeds),
                device=device,
                selected_epochs=[r["best_epoch"] for r in runs],
                **extra,
            ),
        )

    def _artifacts(
        self,
        out_dir: Path,
        data: BagDataset,
        names: list[str],
        predictions: list[dict[str, Any]],
        curves_all: list[dict[str, Any]],
        attention: dict[str, np.ndarray],
    ) -> tuple[dict[str, str], dict[str, tuple[float, float]], list[str], dict[str, Any]]:
        cfg = self.config
        _write_predictions(out_dir / "predictions.csv", predictions, names)
        first = [p for p in predictions if p["seed"] == cfg.seeds[0]]
        y = np.array([p["label"] for p in first])
        proba = np.stack([p["proba"] for p in first])
        write_json_atomic(out_dir / "roc_curves.json", roc_curves(y, proba, names))
        write_json_atomic(
            out_dir / "confusion_matrix.json", confusion_matrix_artifact(y, proba.argmax(1), names)
        )
        artifacts = {
            "predictions": "predictions.csv",
            "roc_curves": "roc_curves.json",
            "confusion_matrix": "confusion_matrix.json",
        }
        if curves_all:
            write_json_atomic(out_dir / "curves.json", {**curves_all[0], "runs": curves_all})
            artifacts["curves"] = "curves.json"
        if getattr(cfg, "save_attention", False) and attention:
            artifacts.update(write_attention(out_dir / "attention.h5", data, attention))
        ci95, flags, extra = {}, [], {}
        unique_items = len({p["row"] for p in first}) == len(first)
        if cfg.bootstrap_resamples and unique_items:
            cis = bootstrap_classification(y, proba, n_resamples=cfg.bootstrap_resamples)
            ci95 = {k: ci.as_tuple() for k, ci in cis.items()}
            extra["bootstrap"] = {
                "resamples": cfg.bootstrap_resamples,
                "seed": 0,
                "stratified": True,
                "over": "pooled out-of-fold test predictions, first seed",
                "skipped": {k: ci.n_skipped for k, ci in cis.items()},
            }
        elif cfg.bootstrap_resamples:
            flags.append("no CI: test sets of the folds overlap")
        return artifacts, ci95, flags, extra


def _mil_protocol(name: str, aggregator: str, options: dict[str, Any], doc: str) -> type[Protocol]:
    config = dataclasses.make_dataclass(
        f"{aggregator.title()}Config",
        [
            ("aggregator", str, field(default=aggregator)),
            ("aggregator_options", dict, field(default_factory=lambda: dict(options))),
        ],
        bases=(MILConfig,),
    )
    cls = type(name, (_MILProtocol,), {"name": name, "Config": config, "__doc__": doc})
    return register_protocol(cls)


_ABMIL_OPTIONS = {"hidden": 512, "attn_dim": 128, "dropout": 0.25}
WsiAbmilGpfm = _mil_protocol(
    "wsi.abmil.gpfm", "abmil", _ABMIL_OPTIONS, "GPFM's ABMIL protocol [F] (module docstring)."
)
WsiAbmilGated = _mil_protocol(
    "wsi.abmil.gated", "abmil_gated", _ABMIL_OPTIONS, "Gated ABMIL, GPFM optimiser."
)
WsiTransMIL = _mil_protocol(
    "wsi.transmil",
    "transmil",
    {"dim": 512, "heads": 8, "landmarks": 256, "dropout": 0.1},
    "TransMIL (paper defaults), GPFM optimiser.",
)
WsiMeanPool = _mil_protocol(
    "wsi.meanpool",
    "meanpool",
    {"hidden": 512, "dropout": 0.25},
    "Mean pooling + linear head, GPFM optimiser.",
)
WsiMaxPool = _mil_protocol(
    "wsi.maxpool", "maxpool", {"hidden": 512, "dropout": 0.25}, "Max pooling + linear head, GPFM optimiser."
)


@dataclass
class PooledLinearConfig:
    """Pinned defaults of ``wsi.linear.pooled`` (Patho-Bench style).

    Attributes:
        pooling: ``mean`` or ``max`` pooling of each bag's tiles.
        c_mode: ``fixed`` (C below), ``adaptive`` (C = d·K/100) or ``auto`` (sweep; best val balanced
            accuracy).
        C: inverse L2 strength of the logistic regression.
        class_weight: ``balanced`` or None.
        max_iter: lbfgs iterations.
        seeds: solver seeds (the fit is deterministic; kept for the result schema).
        n_folds: folds made when the task declares none.
        val_fraction: validation share (used by ``auto``; otherwise val joins train).
        split_seed: seed of the folds made here.
        bootstrap_resamples: resamples of the pooled CI (0 = none).
    """

    pooling: str = "mean"
    c_mode: str = "fixed"
    C: float = 0.5
    class_weight: str | None = "balanced"
    max_iter: int = 10000
    seeds: tuple[int, ...] = (0,)
    n_folds: int = 5
    val_fraction: float = 0.125
    split_seed: int = 0
    bootstrap_resamples: int = 1000


@register_protocol
class WsiLinearPooled(_MILProtocol):
    """``wsi.linear.pooled``: mean-pooled slide/case features → ``roi.linear.sk`` logistic regression."""

    name = "wsi.linear.pooled"
    Config = PooledLinearConfig

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Fit per fold on pooled bag features (C fixed, or swept on val for ``auto``); score test."""
        from gpfm.eval.roi.probes import train_sklearn_logreg

        cfg = self.config
        data = check_bags(self, data, survival=False)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = data.label_names or [str(i) for i in range(data.n_classes)]
        folds = resolve_folds(
            data, data.labels, n_folds=cfg.n_folds, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed
        )
        x = data.pooled(cfg.pooling)
        runs, predictions = [], []
        for fold in folds:
            train = fold.train if cfg.c_mode == "auto" else np.union1d(fold.train, fold.val)
            probe = train_sklearn_logreg(
                x[train],
                data.labels[train],
                x[fold.val],
                data.labels[fold.val],
                x[fold.test],
                len(names),
                c_mode=cfg.c_mode,
                C=cfg.C,
                class_weight=cfg.class_weight,
                max_iter=cfg.max_iter,
                seed=cfg.seeds[0],
            )
            y = data.labels[fold.test]
            runs.append(
                {
                    **classification_metrics(y, probe.proba, names),
                    "fold": fold.name,
                    "seed": cfg.seeds[0],
                    "C": probe.info["C"],
                }
            )
            predictions += [
                {
                    "id": data.ids[i],
                    "label": int(y[j]),
                    "proba": probe.proba[j],
                    "fold": fold.name,
                    "seed": cfg.seeds[0],
                    "row": int(i),
                }
                for j, i in enumerate(fold.test)
            ]
        metrics, metrics_sd = summarize_run_dicts(
            [{k: v for k, v in r.items() if k not in ("fold", "seed", "C")} for r in runs]
        )
        artifacts, ci95, flags, extra = self._artifacts(out_dir, data, names, predictions, [], {})
        return self.make_result(
            task=task,
            encoder=encoder,
            metrics=metrics,
            metrics_sd=metrics_sd if len(runs) > 1 else {},
            ci95=ci95,
            runs=runs,
            artifacts=artifacts,
            flags=flags,
            provenance=slide_provenance(self, data, folds, selected_C=[r["C"] for r in runs], **extra),
        )
