"""What the survival protocols share: the NLL / Cox training objective and the result assembly.

The result holds the mean ± sd c-index over folds × seeds, a fold-stratified bootstrap CI of the mean
per-fold c-index, predictions and the Kaplan–Meier risk-group curves (:mod:`gpfm.eval.families.survival`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpfm.atomic import atomic_path, write_json_atomic
from gpfm.eval.data.bags import BagDataset
from gpfm.eval.data.folds import FoldSplit
from gpfm.eval.metrics.bootstrap import bootstrap_statistic, summarize_run_dicts
from gpfm.eval.metrics.survival import concordance_index
from gpfm.eval.mil.common import resolve_folds, slide_provenance
from gpfm.eval.protocol import Protocol, ProtocolResult
from gpfm.eval.survival.cox import cox_ph_loss
from gpfm.eval.survival.km import km_curves, risk_groups
from gpfm.eval.survival.nll import NLLSurvLoss, TimeBins, risk_from_logits
from gpfm.eval.training import Objective


def survival_objective(
    kind: str, time: np.ndarray, event: np.ndarray, bins: TimeBins | None, alpha: float, monitor: str
) -> tuple[Objective, Any]:
    """Loss, validation score and a logits → risk map for the NLL or Cox model."""
    if monitor not in ("cindex", "loss"):
        raise ValueError(f"monitor {monitor!r} is unknown; use 'cindex' or 'loss'")
    t_all = torch.tensor(np.asarray(time, dtype=np.float32))
    e_all = torch.tensor(np.asarray(event, dtype=np.float32))
    if kind == "nll":
        nll = NLLSurvLoss(alpha=alpha)
        y_all = torch.as_tensor(bins.assign(time))

        def loss(outputs: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            return nll(outputs, y_all[rows].to(outputs.device), (1 - e_all[rows]).to(outputs.device))

        def to_risk(outputs: torch.Tensor) -> torch.Tensor:
            return risk_from_logits(outputs)
    elif kind == "cox":

        def loss(outputs: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            return cox_ph_loss(outputs[:, 0], t_all[rows].to(outputs.device), e_all[rows].to(outputs.device))

        def to_risk(outputs: torch.Tensor) -> torch.Tensor:
            return outputs[:, 0]
    else:
        raise ValueError(f"survival loss {kind!r} is unknown; use 'nll' or 'cox'")

    def score(outputs: torch.Tensor, rows: np.ndarray) -> tuple[float, float]:
        val_loss = float(loss(outputs, rows))
        if monitor == "loss":
            return val_loss, val_loss
        try:
            return 1.0 - concordance_index(event[rows], time[rows], to_risk(outputs).numpy()), val_loss
        except ValueError:  # no comparable pair in the validation cases
            return 0.5, val_loss

    strata = np.asarray(event)
    return Objective(loss, score, strata), to_risk


class SurvivalBase(Protocol):
    """Result assembly shared by the survival protocols."""

    family = "survival"
    data_kind = BagDataset
    version = 1
    primary_metric = "c_index"
    val_equals_test = False

    def _folds(self, data: BagDataset, val_fraction: float) -> list[FoldSplit]:
        return resolve_folds(
            data,
            data.event,
            n_folds=self.config.n_folds,
            val_fraction=val_fraction,
            split_seed=self.config.split_seed,
            val_equals_test=self.val_equals_test,
        )

    def _result(
        self,
        data: BagDataset,
        folds: list[FoldSplit],
        out_dir: Path,
        task: str,
        encoder: str,
        runs: list[dict[str, Any]],
        predictions: list[dict[str, Any]],
        artifacts: dict[str, str],
        flags: list[str],
        **extra: Any,
    ) -> ProtocolResult:
        cfg = self.config
        first = [p for p in predictions if p["seed"] == cfg.seeds[0]]
        fold_names = np.array([p["fold"] for p in first])
        groups = np.empty(len(first), dtype=object)
        for name in np.unique(fold_names):
            mask = fold_names == name
            groups[mask] = risk_groups(np.array([p["risk"] for p in first])[mask], cfg.km_split)
        time = np.array([p["time"] for p in first])
        event = np.array([p["event"] for p in first])
        risk = np.array([p["risk"] for p in first])
        km = km_curves(risk, time, event, cfg.km_split, groups=groups.astype(str))
        write_json_atomic(out_dir / "km_curves.json", km)
        with atomic_path(out_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "time", "event", "risk", "risk_group", "fold", "seed"])
            group_of = {(p["id"], p["fold"]): g for p, g in zip(first, groups, strict=True)}
            for p in predictions:
                writer.writerow(
                    [
                        p["id"],
                        p["time"],
                        p["event"],
                        f"{p['risk']:.6g}",
                        group_of.get((p["id"], p["fold"]), "") if p["seed"] == cfg.seeds[0] else "",
                        p["fold"],
                        p["seed"],
                    ]
                )
        artifacts = {"predictions": "predictions.csv", "km_curves": "km_curves.json", **artifacts}
        metric_runs = [{"c_index": r["c_index"]} for r in runs]
        metrics, metrics_sd = summarize_run_dicts(metric_runs)
        metrics["logrank_p"] = km["logrank_p"]
        ci95: dict[str, tuple[float, float]] = {}
        if cfg.bootstrap_resamples:
            fold_ids = np.unique(fold_names, return_inverse=True)[1]

            def fold_mean_cindex(idx: np.ndarray) -> float:
                vals = []
                for f in np.unique(fold_ids[idx]):
                    sel = idx[fold_ids[idx] == f]
                    try:
                        vals.append(concordance_index(event[sel], time[sel], risk[sel]))
                    except ValueError:
                        return float("nan")
                return float(np.mean(vals))

            ci = bootstrap_statistic(fold_mean_cindex, len(first), cfg.bootstrap_resamples, strata=fold_ids)
            ci95["c_index"] = ci.as_tuple()
            extra["bootstrap"] = {
                "resamples": cfg.bootstrap_resamples,
                "seed": 0,
                "strata": "fold",
                "statistic": "mean of per-fold c-index",
                "skipped": ci.n_skipped,
            }
        if self.val_equals_test:
            flags = ["val==test (faithful)", *flags]
        return self.make_result(
            task=task,
            encoder=encoder,
            metrics=metrics,
            metrics_sd=metrics_sd if len(runs) > 1 else {},
            ci95=ci95,
            runs=runs,
            artifacts=artifacts,
            flags=flags,
            provenance=slide_provenance(
                self, data, folds, seeds=list(cfg.seeds), event_rate=float(np.mean(data.event)), **extra
            ),
        )
