"""Survival protocols on the REAL TCGA tables (age, sex, subtype one-hot as covariates; one instance a case).

The covariates stand in for slide features (the slides are not shipped): each case is a bag of one instance,
so ABMIL reduces to an MLP on the covariates, and CoxNet sees the same vector. Labels are verified:
event = 1 − censorship.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from gpfm.eval.data.bags import BagDataset
from gpfm.eval.data.folds import FoldSplit
from gpfm.eval.protocol import create_protocol

FAST = {
    "max_epochs": 15,
    "min_epochs": 4,
    "patience": 5,
    "n_folds": 3,
    "num_threads": 1,
    "device": "cpu",
    "bootstrap_resamples": 200,
}


def _covariate_bags(shared_data: Path, cohort: str) -> BagDataset:
    table = pd.read_csv(shared_data / "tables" / "survpath_tcga" / f"tcga_{cohort}.csv")
    cases = table.drop_duplicates("case_id").reset_index(drop=True)
    assert (table.groupby("case_id")["censorship"].nunique() == 1).all()  # one label per case
    age = cases["age"].fillna(cases["age"].median())  # a few cases of some cohorts lack an age
    age = (age - age.mean()) / age.std()
    subtype = pd.get_dummies(cases["oncotree_code"]).to_numpy(dtype=np.float32)
    x = np.column_stack([age, cases["is_female"], subtype]).astype(np.float32)
    event = 1 - cases["censorship"].to_numpy()
    return BagDataset(
        [torch.from_numpy(r[None]) for r in x],
        None,
        cases["case_id"].tolist(),
        time=cases["survival_months"].to_numpy(),
        event=event,
    )


def _check_predictions_and_km(result, out: Path, data: BagDataset) -> None:
    preds = pd.read_csv(out / result.artifacts["predictions"])
    assert sorted(preds["id"]) == sorted(data.ids)  # every case tested exactly once over the folds
    by_id = dict(zip(data.ids, range(len(data)), strict=True))
    for run, (fold, part) in zip(result.runs, preds.groupby("fold", sort=False), strict=True):
        assert run["fold"] == fold
        rows = [by_id[i] for i in part["id"]]
        np.testing.assert_array_equal(part["event"], data.event[rows])  # event = 1 − censorship, as loaded
        expected = concordance_index_censored(part["event"].astype(bool), part["time"], part["risk"])[0]
        assert run["c_index"] == pytest.approx(expected, abs=1e-6)  # CSV risks are rounded to 6 digits
    km = json.loads((out / result.artifacts["km_curves"]).read_text())
    assert set(km["groups"]) == {"low risk", "high risk"} and 0 <= km["logrank_p"] <= 1
    assert sum(g["n"] for g in km["groups"].values()) == len(data)


@pytest.mark.realdata
def test_coxnet_on_real_tcga_brca(shared_data, tmp_path: Path) -> None:
    data = _covariate_bags(shared_data, "brca")
    result = create_protocol("surv.coxnet", n_folds=5, bootstrap_resamples=200).run(
        data, tmp_path, task="tcga-brca-os", encoder="clinical"
    )
    print(
        f"surv.coxnet BRCA (871 cases): c-index {result.metrics['c_index']:.3f} ± "
        f"{result.metrics_sd['c_index']:.3f},"
        f" CI {result.ci95['c_index']}, log-rank p {result.metrics['logrank_p']:.2g}, alphas "
        f"{result.provenance['selected_alphas']}"
    )
    assert result.metrics["c_index"] > 0.55
    assert result.ci95["c_index"][0] < result.metrics["c_index"] < result.ci95["c_index"][1]
    _check_predictions_and_km(result, tmp_path, data)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["surv.abmil_nll", "surv.abmil_cox"])
def test_abmil_survival_on_real_tcga_blca_beats_chance(shared_data, tmp_path: Path, name: str) -> None:
    data = _covariate_bags(shared_data, "blca")
    extra = {"batch_size": 16} if name == "surv.abmil_cox" else {}
    result = create_protocol(name, **FAST, **extra).run(
        data, tmp_path, task="tcga-blca-os", encoder="clinical"
    )
    print(
        f"{name} BLCA (359 cases, 3 folds): c-index {result.metrics['c_index']:.3f} ± "
        f"{result.metrics_sd['c_index']:.3f}, per fold {[round(r['c_index'], 3) for r in result.runs]}, "
        f"selected epochs {result.provenance['selected_epochs']}"
    )
    assert result.metrics["c_index"] > 0.55
    assert result.flags == []
    for split in result.provenance["splits"]:  # separate validation and test folds
        assert split["val"] > 0 and split["test"] > 0
    _check_predictions_and_km(result, tmp_path, data)
    if name == "surv.abmil_nll":
        for edges in result.provenance["time_bins"]:  # [I] training-fold bins with outer edges 0 and +inf
            assert edges[0] == 0.0 and edges[-1] == float("inf") and len(edges) == 5


@pytest.mark.realdata
def test_faithful_variant_is_flagged_and_selects_on_test(shared_data, tmp_path: Path) -> None:
    data = _covariate_bags(shared_data, "blca")
    fast = {**FAST, "max_epochs": 6, "min_epochs": 2, "patience": 2}
    result = create_protocol("surv.abmil_nll.gpfm-faithful", **fast).run(
        data, tmp_path, task="t", encoder="e"
    )
    assert result.flags[0] == "val==test (faithful)"
    assert all(s["val"] == s["test"] for s in result.provenance["splits"])
    assert all(np.isfinite(e).all() for e in result.provenance["time_bins"])  # [F] whole-cohort outer edges


def test_protocols_refuse_val_equal_test_and_wrong_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NaN"):
        BagDataset([torch.tensor([[float("nan")]])], None, ["c0"])
    bags = [torch.randn(2, 3) for _ in range(12)]
    time = np.arange(1.0, 13.0)
    event = np.array([1, 0] * 6)
    fold = FoldSplit("bad", np.arange(6), np.arange(6, 12), np.arange(6, 12))
    data = BagDataset(bags, None, [f"c{i}" for i in range(12)], time=time, event=event, folds=[fold])
    with pytest.raises(ValueError, match="both val and test"):
        create_protocol("surv.abmil_nll", **FAST).run(data, tmp_path, task="t", encoder="e")
    with pytest.raises(ValueError, match="survival_h5"):
        create_protocol("surv.coxnet").run(
            BagDataset(bags, np.zeros(12, int), [f"c{i}" for i in range(12)]), tmp_path, task="t", encoder="e"
        )
    with pytest.raises(ValueError, match="unknown option"):
        create_protocol("surv.abmil_nll", learning_rate=1.0)


def _synthetic_survival(n: int = 120, seed: int = 0) -> BagDataset:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk) * 20) + 0.1
    event = (rng.random(n) < 0.7).astype(int)
    bags = [
        torch.from_numpy(np.column_stack([np.full(3, r), rng.normal(size=(3, 2))]).astype(np.float32))
        for r in risk
    ]
    return BagDataset(bags, None, [f"c{i}" for i in range(n)], time=time, event=event)


def test_fixed_epochs_and_coxnet_val_selection(tmp_path: Path) -> None:
    data = _synthetic_survival()
    fixed = create_protocol("surv.abmil_nll", **{**FAST, "fixed_epochs": 3, "seeds": (1, 2)}).run(
        data, tmp_path / "fixed", task="t", encoder="e"
    )
    assert _flag_has(fixed.flags, "fixed 3 epochs")
    assert all(s["val"] == 0 for s in fixed.provenance["splits"])  # no selection set at all
    assert all(r["epochs_run"] == 3 for r in fixed.runs) and len(fixed.runs) == 6  # 3 folds × 2 seeds
    assert fixed.metrics_sd["c_index"] >= 0 and fixed.metrics["c_index"] > 0.6
    coxnet = create_protocol("surv.coxnet", selection="val", n_folds=3, bootstrap_resamples=0).run(
        data, tmp_path / "coxnet", task="t", encoder="e"
    )
    assert all(s["val"] > 0 for s in coxnet.provenance["splits"])
    assert coxnet.metrics["c_index"] > 0.65 and coxnet.ci95 == {}
    assert all(set(r["selection"]) == {"0.01", "0.02", "0.07"} for r in coxnet.runs)


def _flag_has(flags: list[str], text: str) -> bool:
    """Whether any flag contains ``text``."""
    return any(text in f for f in flags)
