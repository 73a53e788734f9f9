"""Survival protocols: ABMIL with the discrete-time NLL or the Cox loss, and CoxNet on pooled features.

Pinned defaults; the primary metric is Harrell's c-index (scikit-survival's):

* ``surv.abmil_nll`` [I] (default): ABMIL (``wsi.abmil.gpfm``'s trunk) with 4 hazard outputs, NLL α = 0, quantile
  bins of the uncensored **training** times with outer edges 0 and +∞; Adam 2e-4, wd 1e-4, batch 1, ≤ 100
  epochs; 5 case-level folds, each with an event-stratified 15% validation set carved from its training
  cases; early stopping on validation 1 − c-index (patience 20, after epoch 50), best checkpoint restored.
  ``fixed_epochs`` (e.g. 30) trains without validation instead. Never selects on test.
* ``surv.abmil_cox`` [I]: the same with one output and the Breslow Cox partial likelihood over batches of
  32 bags (risk sets need several cases).
* ``surv.coxnet``: mean-pooled features → elastic-net Cox (α ∈ {0.01, 0.02, 0.07} chosen by inner 5-fold CV
  on the training cases, l1_ratio 0.5, max_iter 100,000).
* ``surv.abmil_nll.gpfm-faithful`` [F]: ``surv.abmil_nll`` with GPFM's flaw kept — early stopping on the test
  fold (val == test) and whole-cohort bins. Flagged ``val==test (faithful)``; never a headline number.

Metrics are the mean ± sd over folds × seeds. The 95% CI bootstraps test cases within each fold (1,000
resamples, seed 0) and takes the mean of the per-fold c-indices, matching the point estimate. The
``km_curves`` artifact holds Kaplan–Meier curves of the low/high predicted-risk groups (cut at each fold's
median test risk, first seed) with the log-rank p.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpfm.atomic import write_json_atomic
from gpfm.eval.data.bags import load_survival_task
from gpfm.eval.family import Family, register_family
from gpfm.eval.metrics.survival import concordance_index
from gpfm.eval.mil import create_aggregator
from gpfm.eval.mil.common import check_bags, save_model, write_attention
from gpfm.eval.protocol import ProtocolResult, register_protocol, register_task_loader
from gpfm.eval.survival.coxnet import fit_coxnet
from gpfm.eval.survival.nll import quantile_bins
from gpfm.eval.survival.protocol_base import SurvivalBase, survival_objective
from gpfm.eval.training import TrainConfig, cpu_threads, fit, predict, seed_everything
from gpfm.runtime import resolve_device

register_family(Family(
    "survival", "predict patient survival from slide features (c-index)"))
register_task_loader("survival_h5")(load_survival_task)


@dataclass
class SurvivalMILConfig:
    """Pinned defaults of ``surv.abmil_nll`` [I] (see the module docstring).

    Attributes:
        aggregator: registered aggregator name.
        aggregator_options: architecture options.
        loss: ``nll`` or ``cox``.
        n_bins: NLL time bins.
        bin_rule: ``train`` [I] or ``cohort`` [F].
        alpha: NLL weight of the uncensored-only term.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: bags per step.
        max_epochs: epoch budget.
        patience: early-stopping patience.
        min_epochs: stopping allowed only after this 0-based epoch.
        monitor: ``cindex`` (1 − validation c-index) or ``loss``.
        fixed_epochs: train exactly this many epochs without validation (None = early stopping).
        balanced_sampling: sample bags balanced by event status.
        max_tiles_train: random tiles per bag and step (None = all).
        seeds: training seeds.
        n_folds: folds made when the task declares none.
        val_fraction: validation share of each fold's training cases.
        split_seed: seed of the folds made here.
        km_split: ``median`` or ``tertiles`` risk groups.
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        num_threads: CPU threads while training (None = as set by the caller).
        bootstrap_resamples: resamples of the CI (0 = none).
        save_attention: write the ``attention`` artifact.
    """

    aggregator: str = "abmil"
    aggregator_options: dict[str, Any] = field(
        default_factory=lambda: {"hidden": 512, "attn_dim": 128, "dropout": 0.25}
    )
    loss: str = "nll"
    n_bins: int = 4
    bin_rule: str = "train"
    alpha: float = 0.0
    lr: float = 2e-4
    weight_decay: float = 1e-4
    batch_size: int = 1
    max_epochs: int = 100
    patience: int = 20
    min_epochs: int = 50
    monitor: str = "cindex"
    fixed_epochs: int | None = None
    balanced_sampling: bool = False
    max_tiles_train: int | None = None
    seeds: tuple[int, ...] = (1024,)
    n_folds: int = 5
    val_fraction: float = 0.15
    split_seed: int = 0
    km_split: str = "median"
    device: str = "auto"
    num_threads: int | None = None
    bootstrap_resamples: int = 1000
    save_attention: bool = True


class _SurvivalMIL(SurvivalBase):
    """ABMIL survival training (NLL or Cox) over folds × seeds."""

    Config = SurvivalMILConfig

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Train per fold and seed, predict test risks, write predictions, KM curves, attention and curves."""
        cfg = self.config
        data = check_bags(self, data, survival=True)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        use_val = cfg.fixed_epochs is None
        folds = self._folds(data, cfg.val_fraction if use_val else 0.0)
        device = str(resolve_device(cfg.device))
        n_out = cfg.n_bins if cfg.loss == "nll" else 1
        runs, predictions, curves_all, attention, bins_used = [], [], [], {}, []
        for seed in cfg.seeds:
            for fold in folds:
                bins = None
                if cfg.loss == "nll":
                    fit_rows = fold.train if cfg.bin_rule == "train" else np.arange(len(data))
                    bins = quantile_bins(data.time[fit_rows], data.event[fit_rows], cfg.n_bins, cfg.bin_rule)
                    bins_used.append(list(bins.edges))
                objective, to_risk = survival_objective(
                    cfg.loss, data.time, data.event, bins, cfg.alpha, cfg.monitor
                )
                seed_everything(seed)
                model = create_aggregator(
                    cfg.aggregator, in_dim=data.dim, n_outputs=n_out, **cfg.aggregator_options
                )
                train_cfg = TrainConfig(
                    lr=cfg.lr,
                    weight_decay=cfg.weight_decay,
                    batch_size=cfg.batch_size,
                    max_epochs=cfg.fixed_epochs or cfg.max_epochs,
                    patience=cfg.patience,
                    min_epochs=cfg.min_epochs,
                    balanced_sampling=cfg.balanced_sampling,
                    max_tiles_train=cfg.max_tiles_train,
                    seed=seed,
                    device=device,
                    num_threads=cfg.num_threads,
                )
                val_rows = fold.val if use_val else np.array([], dtype=np.int64)
                fitted = fit(model, data.bags, fold.train, val_rows, objective, train_cfg)
                first_seed = seed == cfg.seeds[0]
                if first_seed:  # reusable on any slide: gpfm heatmap --source attention --model
                    save_model(out_dir, fold.name, model, cfg.aggregator, cfg.aggregator_options, data.dim, n_out,
                               [f"output{k}" for k in range(n_out)], encoder, "survival")
                with cpu_threads(cfg.num_threads):
                    outputs, attn = predict(model, data.bags, fold.test, device, with_attention=first_seed)
                risk = to_risk(outputs).numpy()
                rows = fold.test
                runs.append(
                    {
                        "c_index": concordance_index(data.event[rows], data.time[rows], risk),
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
                for j, i in enumerate(rows):
                    predictions.append(
                        {
                            "id": data.ids[i],
                            "time": float(data.time[i]),
                            "event": int(data.event[i]),
                            "risk": float(risk[j]),
                            "fold": fold.name,
                            "seed": seed,
                        }
                    )
                    if first_seed and attn[j] is not None:
                        attention[data.ids[i]] = attn[j]
        write_json_atomic(out_dir / "curves.json", {**curves_all[0], "runs": curves_all})
        artifacts = {"curves": "curves.json"}
        if cfg.save_attention and attention:
            artifacts.update(write_attention(out_dir / "attention.h5", data, attention))
        flags = [] if use_val else [f"fixed {cfg.fixed_epochs} epochs, no validation"]
        return self._result(
            data,
            folds,
            out_dir,
            task,
            encoder,
            runs,
            predictions,
            artifacts,
            flags,
            device=device,
            selected_epochs=[r["best_epoch"] for r in runs],
            time_bins=bins_used,
        )


def _config(name: str, base: type, **defaults: Any) -> type:
    fields_ = []
    for key, value in defaults.items():
        if isinstance(value, dict):
            fields_.append((key, dict, field(default_factory=lambda v=value: dict(v))))
        else:
            fields_.append((key, type(value) if value is not None else Any, field(default=value)))
    return dataclasses.make_dataclass(name, fields_, bases=(base,))


@register_protocol
class SurvAbmilNLL(_SurvivalMIL):
    """``surv.abmil_nll`` [I]: ABMIL + discrete-time NLL, separate validation and test folds."""

    name = "surv.abmil_nll"


@register_protocol
class SurvAbmilCox(_SurvivalMIL):
    """``surv.abmil_cox`` [I]: ABMIL + Cox partial likelihood on 32-bag batches."""

    name = "surv.abmil_cox"
    Config = _config("SurvAbmilCoxConfig", SurvivalMILConfig, loss="cox", batch_size=32)


@register_protocol
class SurvAbmilNLLFaithful(_SurvivalMIL):
    """``surv.abmil_nll.gpfm-faithful`` [F]: early stopping on the test fold, whole-cohort bins (flagged)."""

    name = "surv.abmil_nll.gpfm-faithful"
    val_equals_test = True
    Config = _config("SurvAbmilNLLFaithfulConfig", SurvivalMILConfig, bin_rule="cohort")


@dataclass
class CoxnetConfig:
    """Pinned defaults of ``surv.coxnet``.

    Attributes:
        pooling: ``mean`` or ``max`` bag pooling.
        alphas: candidate elastic-net penalties.
        l1_ratio: elastic-net mixing.
        max_iter: coordinate-descent iterations.
        selection: ``cv`` (inner folds of the training cases) or ``val`` (the fold's validation cases).
        inner_folds: inner folds of ``cv``.
        n_folds: folds made when the task declares none.
        val_fraction: validation share for ``val`` selection.
        split_seed: seed of the folds made here.
        seeds: kept for the result schema (the fit is deterministic).
        km_split: ``median`` or ``tertiles`` risk groups.
        bootstrap_resamples: resamples of the CI (0 = none).
    """

    pooling: str = "mean"
    alphas: tuple[float, ...] = (0.01, 0.02, 0.07)
    l1_ratio: float = 0.5
    max_iter: int = 100_000
    selection: str = "cv"
    inner_folds: int = 5
    n_folds: int = 5
    val_fraction: float = 0.15
    split_seed: int = 0
    seeds: tuple[int, ...] = (0,)
    km_split: str = "median"
    bootstrap_resamples: int = 1000


@register_protocol
class SurvCoxnet(SurvivalBase):
    """``surv.coxnet``: elastic-net Cox on mean-pooled bag features."""

    name = "surv.coxnet"
    Config = CoxnetConfig

    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Fit per fold with α selected on training data only; write predictions and KM curves."""
        cfg = self.config
        data = check_bags(self, data, survival=True)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        use_val = cfg.selection == "val"
        folds = self._folds(data, cfg.val_fraction if use_val else 0.0)
        x = data.pooled(cfg.pooling)
        runs, predictions = [], []
        for fold in folds:
            train = fold.train if use_val else np.union1d(fold.train, fold.val)
            model = fit_coxnet(
                x[train],
                data.time[train],
                data.event[train],
                alphas=cfg.alphas,
                l1_ratio=cfg.l1_ratio,
                max_iter=cfg.max_iter,
                selection=cfg.selection,
                inner_folds=cfg.inner_folds,
                x_val=x[fold.val],
                time_val=data.time[fold.val],
                event_val=data.event[fold.val],
                seed=cfg.split_seed,
            )
            risk = model.predict_risk(x[fold.test])
            rows = fold.test
            runs.append(
                {
                    "c_index": concordance_index(data.event[rows], data.time[rows], risk),
                    "fold": fold.name,
                    "seed": cfg.seeds[0],
                    "alpha": model.alpha,
                    "selection": {str(k): v for k, v in model.selection.items()},
                }
            )
            for j, i in enumerate(rows):
                predictions.append(
                    {
                        "id": data.ids[i],
                        "time": float(data.time[i]),
                        "event": int(data.event[i]),
                        "risk": float(risk[j]),
                        "fold": fold.name,
                        "seed": cfg.seeds[0],
                    }
                )
        return self._result(
            data,
            folds,
            out_dir,
            task,
            encoder,
            runs,
            predictions,
            {},
            [],
            selected_alphas=[r["alpha"] for r in runs],
        )
