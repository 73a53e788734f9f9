"""Harrell's c-index against scikit-survival's ``concordance_index_censored`` (ties, censoring, real TCGA)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from gpfm.eval.metrics.survival import concordance, concordance_index


@pytest.mark.parametrize("seed", range(40))
def test_cindex_equals_sksurv_with_ties_and_censoring(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    time = rng.integers(0, max(2, n // 3), n).astype(float)  # many tied times
    event = rng.random(n) < rng.uniform(0.1, 0.9)
    event[rng.integers(n)] = True
    risk = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # many tied risks
    try:
        expected = concordance_index_censored(event, time, risk)
    except Exception:  # sksurv raises when no pair is comparable; so must we
        with pytest.raises(ValueError):
            concordance(event, time, risk)
        return
    assert concordance(event, time, risk, block=int(rng.integers(1, 64))).as_tuple() == expected


def test_cindex_tied_tolerance_matches_sksurv() -> None:
    rng = np.random.default_rng(0)
    time = rng.exponential(10, 200)
    event = rng.random(200) < 0.6
    risk = np.repeat(rng.normal(size=50), 4) + rng.normal(scale=1e-9, size=200)  # within 1e-8 of each other
    assert concordance(event, time, risk).as_tuple() == concordance_index_censored(event, time, risk)
    assert concordance(event, time, risk, tied_tol=0.0).as_tuple() == concordance_index_censored(
        event, time, risk, tied_tol=0.0
    )


def test_cindex_hand_example() -> None:
    # times 1(e) 2(c) 3(e) 4(c); comparable: (1,2) (1,3) (1,4) (3,4) → 4 pairs
    time = [1, 2, 3, 4]
    event = [1, 0, 1, 0]
    risk = [0.9, 0.1, 0.5, 0.5]  # (1,2)+ (1,3)+ (1,4)+ (3,4) tied → (3 + 0.5) / 4
    c = concordance(event, time, risk)
    assert (c.concordant, c.discordant, c.tied_risk) == (3, 0, 1)
    assert c.cindex == pytest.approx(3.5 / 4)


def test_cindex_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="censored"):
        concordance_index([0, 0], [1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        concordance_index([2, 1], [1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        concordance_index([1, 1], [1, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="comparable"):
        concordance_index([1, 1], [3, 3], [0.1, 0.2])  # two events at the same time only


@pytest.mark.realdata
@pytest.mark.parametrize("cohort", ["brca", "blca", "stad"])
def test_cindex_on_real_tcga_age_equals_sksurv(shared_data, cohort: str) -> None:
    df = pd.read_csv(shared_data / "tables" / "survpath_tcga" / f"tcga_{cohort}.csv").drop_duplicates(
        "case_id"
    )
    df = df.dropna(subset=["age"])
    event = (1 - df["censorship"].to_numpy()).astype(bool)
    time = df["survival_months"].to_numpy()
    risk = df["age"].to_numpy()  # older → higher risk; integer ages give many risk ties
    expected = concordance_index_censored(event, time, risk)
    assert concordance(event, time, risk).as_tuple() == expected
    assert expected[0] > 0.5  # age is prognostic in every one of these cohorts
