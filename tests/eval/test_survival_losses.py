"""Survival building blocks against hand computations and scikit-survival: bins, NLL, Cox, KM, log-rank."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sksurv.compare import compare_survival
from sksurv.nonparametric import kaplan_meier_estimator

from gpfm.eval.survival.cox import cox_ph_loss
from gpfm.eval.survival.km import kaplan_meier, km_curves, logrank_test, risk_groups
from gpfm.eval.survival.nll import NLLSurvLoss, quantile_bins, risk_from_logits


def test_quantile_bins_match_pandas_qcut_and_rules() -> None:
    rng = np.random.default_rng(0)
    time = rng.exponential(30, 200)
    event = rng.random(200) < 0.4
    _, qcut_edges = pd.qcut(time[event], q=4, retbins=True)
    train = quantile_bins(time, event, 4, "train")
    np.testing.assert_allclose(train.edges[1:-1], qcut_edges[1:-1])
    assert train.edges[0] == 0.0 and math.isinf(train.edges[-1])
    cohort = quantile_bins(time, event, 4, "cohort")
    assert cohort.edges[0] == pytest.approx(time.min() - 1e-6) and cohort.edges[-1] == pytest.approx(
        time.max() + 1e-6
    )
    bins = train.assign(time)
    expected = np.digitize(time, train.edges[1:-1], right=False)  # left-closed bins
    np.testing.assert_array_equal(bins, expected)
    counts = np.bincount(train.assign(time[event]))  # quantiles of the uncensored times: equal counts
    assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="outside"):
        cohort.assign([time.max() + 10])
    with pytest.raises(ValueError, match="rule"):
        quantile_bins(time, event, 4, "test")


def _nll_loop(
    logits: torch.Tensor, bins: torch.Tensor, cens: torch.Tensor, alpha: float, eps: float
) -> float:
    total = 0.0
    for f, y, c in zip(logits.tolist(), bins.tolist(), cens.tolist(), strict=True):
        h = [1 / (1 + math.exp(-v)) for v in f]
        s = [1.0]
        for hj in h:
            s.append(s[-1] * (1 - hj))  # s[j + 1] = S_j, s[0] = S_{-1} = 1
        unc = -(1 - c) * (math.log(max(s[y], eps)) + math.log(max(h[y], eps)))
        cen = -c * math.log(max(s[y + 1], eps))
        total += (1 - alpha) * (unc + cen) + alpha * unc
    return total / len(bins)


@pytest.mark.parametrize("alpha", [0.0, 0.15, 1.0])
def test_nll_equals_hand_loop(alpha: float) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 4, generator=g) * 3
    bins = torch.randint(0, 4, (32,), generator=g)
    cens = torch.randint(0, 2, (32,), generator=g)
    loss = NLLSurvLoss(alpha=alpha)(logits, bins, cens)
    assert float(loss) == pytest.approx(_nll_loop(logits, bins, cens, alpha, 1e-7), rel=1e-5)


def test_nll_clamps_and_risk() -> None:
    logits = torch.tensor([[50.0, 50.0, 50.0, 50.0]])  # h≈1 → S≈0; a censored case in bin 3 hits the clamp
    loss = NLLSurvLoss()(logits, torch.tensor([3]), torch.tensor([1]))
    assert float(loss) == pytest.approx(-math.log(1e-7), rel=1e-4)
    low, high = torch.tensor([[-5.0] * 4]), torch.tensor([[5.0] * 4])
    assert float(risk_from_logits(high)) > float(risk_from_logits(low))
    s = torch.cumprod(1 - torch.sigmoid(low), 1)
    assert float(risk_from_logits(low)) == pytest.approx(-float(s.sum()))


def _cox_hand(risk: list[float], time: list[float], event: list[int]) -> float:
    terms = []
    for ri, ti, ei in zip(risk, time, event, strict=True):
        if ei:
            # Breslow: cases tied with t_i stay in its risk set
            at_risk = [math.exp(rj) for rj, tj in zip(risk, time, strict=True) if tj >= ti]
            terms.append(ri - math.log(sum(at_risk)))
    return -sum(terms) / len(terms)


@pytest.mark.parametrize("seed", range(5))
def test_cox_loss_equals_hand_breslow(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 25
    time = rng.integers(1, 8, n).astype(float)  # heavy ties
    event = (rng.random(n) < 0.6).astype(int)
    event[0] = 1
    risk = rng.normal(size=n)
    loss = cox_ph_loss(torch.tensor(risk), torch.tensor(time), torch.tensor(event))
    assert float(loss) == pytest.approx(_cox_hand(risk.tolist(), time.tolist(), event.tolist()), rel=1e-9)


def test_cox_loss_no_event_is_zero_with_gradient() -> None:
    risk = torch.randn(4, requires_grad=True)
    loss = cox_ph_loss(risk, torch.arange(4.0), torch.zeros(4))
    loss.backward()
    assert float(loss.detach()) == 0.0 and risk.grad is not None


@pytest.mark.parametrize("seed", range(10))
def test_kaplan_meier_and_logrank_equal_sksurv(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 200))
    time = rng.integers(0, 30, n).astype(float)
    event = rng.random(n) < 0.5
    event[0] = True
    t_ref, s_ref = kaplan_meier_estimator(event, time)
    t_ours, s_ours = kaplan_meier(time, event)
    np.testing.assert_allclose(t_ours, t_ref)
    np.testing.assert_allclose(s_ours, s_ref, rtol=1e-12)
    groups = rng.integers(0, 2 + seed % 2, n)
    y = np.array(list(zip(event, time, strict=True)), dtype=[("event", bool), ("time", float)])
    chi2, p = compare_survival(y, groups)
    ours = logrank_test(time, event, groups)
    assert ours == pytest.approx((chi2, p), rel=1e-8)


def test_km_curves_artifact_layout() -> None:
    rng = np.random.default_rng(0)
    risk = rng.normal(size=120)
    time = rng.exponential(np.exp(-risk) * 20)  # higher risk → shorter time
    event = rng.random(120) < 0.7
    km = km_curves(risk, time, event, "tertiles")
    assert set(km["groups"]) == {"low risk", "mid risk", "high risk"}
    assert sum(g["n"] for g in km["groups"].values()) == 120
    for g in km["groups"].values():
        assert g["time"][0] == 0.0 and g["survival"][0] == 1.0
        assert np.all(np.diff(g["survival"]) <= 0)
    assert km["logrank_p"] < 0.01
    np.testing.assert_array_equal(np.unique(risk_groups(risk, "median"), return_counts=True)[1], [60, 60])
