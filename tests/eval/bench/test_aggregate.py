"""Cross-task aggregation against hand-computed mean scores, average ranks (with ties) and firsts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import friedmanchisquare

from gpfm.eval.run.aggregate import aggregate, rank_values
from gpfm.eval.run.results import STATUS_FAILED, STATUS_OK, ResultRow, metric_higher_is_better


def _row(
    task: str,
    enc: str,
    value: float | None,
    *,
    family: str = "roi_classification",
    subgroup: str | None = None,
    metric: str = "balanced_accuracy",
    saturated: bool = False,
    headline: bool = True,
    protocol: str = "p",
) -> ResultRow:
    return ResultRow(
        task=task,
        family=family,
        group=f"{family}/{subgroup}" if subgroup else family,
        protocol=protocol,
        protocol_version=1,
        encoder=enc,
        status=STATUS_OK if value is not None else STATUS_FAILED,
        primary_metric=metric,
        value=value,
        higher_is_better=metric_higher_is_better(metric),
        headline=headline,
        saturated=saturated,
        reason="" if value is not None else "boom",
    )


@pytest.fixture
def rows() -> list[ResultRow]:
    # t1 higher-better with a tie for 2nd; t2 an error rate (lower is better); t3 a three-way tie;
    # t4 saturated; t5 C failed; t1 also has a non-headline protocol that must not count.
    return [
        _row("t1", "A", 0.9),
        _row("t1", "B", 0.8),
        _row("t1", "C", 0.8),
        _row("t1", "A", 0.1, protocol="q", headline=False),
        _row("t1", "C", 0.99, protocol="q", headline=False),
        _row("t2", "A", 0.3, metric="error_rate"),
        _row("t2", "B", 0.1, metric="error_rate"),
        _row("t2", "C", 0.2, metric="error_rate"),
        _row("t3", "A", 0.7, family="survival", metric="c_index"),
        _row("t3", "B", 0.7, family="survival", metric="c_index"),
        _row("t3", "C", 0.7, family="survival", metric="c_index"),
        _row("t4", "A", 0.99, saturated=True),
        _row("t4", "B", 0.98, saturated=True),
        _row("t4", "C", 0.999, saturated=True),
        _row("t5", "A", 0.5, family="survival", subgroup="external", metric="c_index"),
        _row("t5", "B", 0.6, family="survival", subgroup="external", metric="c_index"),
        _row("t5", "C", None, family="survival", subgroup="external", metric="c_index"),
    ]


def test_rank_values_ties_and_direction() -> None:
    assert rank_values([0.9, 0.8, 0.8, 0.7]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert rank_values([0.1, 0.3, 0.1], higher_is_better=False).tolist() == [1.5, 3.0, 1.5]
    assert rank_values([0.5, 0.5, 0.5]).tolist() == [2.0, 2.0, 2.0]


def test_metric_direction() -> None:
    assert metric_higher_is_better("balanced_accuracy") and metric_higher_is_better("c_index")
    assert metric_higher_is_better("bleu_4") and metric_higher_is_better("macro_auroc")
    assert not metric_higher_is_better("error_rate") and not metric_higher_is_better("val_loss")
    assert not metric_higher_is_better("brier_score") and not metric_higher_is_better("ibs")
    assert metric_higher_is_better("val_loss", "higher") and not metric_higher_is_better("accuracy", "lower")


def test_overall_by_hand(rows: list[ResultRow]) -> None:
    agg = aggregate(rows)
    board = agg.overall
    assert board.units == ["t1", "t2", "t3", "t5"]  # t4 is saturated, the q protocol is not headline
    # per-task ranks: t1 A1 B2.5 C2.5 | t2 (lower better) A3 B1 C2 | t3 all 2 | t5 B1 A2 (C failed)
    assert board.ranks["t1"] == {"A": 1.0, "B": 2.5, "C": 2.5}
    assert board.ranks["t2"] == {"A": 3.0, "B": 1.0, "C": 2.0}
    assert board.ranks["t3"] == {"A": 2.0, "B": 2.0, "C": 2.0}
    assert board.ranks["t5"] == {"A": 2.0, "B": 1.0}
    a, b, c = board.entry("A"), board.entry("B"), board.entry("C")
    assert a.mean_score == pytest.approx((0.9 + 0.3 + 0.7 + 0.5) / 4)
    assert b.mean_score == pytest.approx((0.8 + 0.1 + 0.7 + 0.6) / 4)
    assert c.mean_score == pytest.approx((0.8 + 0.2 + 0.7) / 3)
    assert a.average_rank == pytest.approx((1 + 3 + 2 + 2) / 4)
    assert b.average_rank == pytest.approx((2.5 + 1 + 2 + 1) / 4)
    assert c.average_rank == pytest.approx((2.5 + 2 + 2) / 3)
    assert (a.n_first, b.n_first, c.n_first) == (2, 3, 1)  # the three-way tie on t3 counts for everyone
    assert (a.n_tasks, b.n_tasks, c.n_tasks) == (4, 4, 3) and c.n_failed == 1
    assert [e.encoder for e in board.entries] == ["B", "A", "C"]  # sorted by average rank
    assert not agg.complete
    # Friedman over the complete tasks t1..t3, on values oriented so larger = better
    expected = friedmanchisquare([0.9, -0.3, 0.7], [0.8, -0.1, 0.7], [0.8, -0.2, 0.7]).pvalue
    assert board.friedman_p == pytest.approx(expected)


def test_families_and_saturated(rows: list[ResultRow]) -> None:
    agg = aggregate(rows)
    assert set(agg.families) == {"roi_classification", "survival", "survival/external"}
    roi = agg.families["roi_classification"]
    assert roi.units == ["t1", "t2"]
    assert roi.entry("A").average_rank == pytest.approx(2.0) and roi.entry("B").average_rank == pytest.approx(
        1.75
    )
    surv = agg.families["survival"]
    assert surv.units == ["t3", "t5"] and surv.entry("C").n_tasks == 1
    assert agg.families["survival/external"].units == ["t5"]
    sat = agg.saturated
    assert sat is not None and sat.units == ["t4"]
    assert sat.ranks["t4"] == {"A": 2.0, "B": 3.0, "C": 1.0}
    assert [e.encoder for e in sat.entries] == ["C", "A", "B"]


def test_all_protocol_units(rows: list[ResultRow]) -> None:
    board = aggregate(rows, headline_only=False).overall
    assert "t1 [q]" in board.units and board.ranks["t1 [q]"] == {"A": 2.0, "C": 1.0}
    assert len(board.units) == 5


def test_random_tables_match_naive_computation() -> None:
    rng = np.random.default_rng(3)
    values = np.round(rng.random((6, 4)), 1)  # coarse rounding creates ties
    encs = ["e0", "e1", "e2", "e3"]
    rows = [_row(f"t{t}", encs[e], float(values[t, e])) for t in range(6) for e in range(4)]
    board = aggregate(rows).overall
    for e, enc in enumerate(encs):
        # naive rank: 1 + number strictly better + half the number tied (excluding itself)
        naive = [
            1 + (values[t] > values[t, e]).sum() + 0.5 * ((values[t] == values[t, e]).sum() - 1)
            for t in range(6)
        ]
        assert board.entry(enc).average_rank == pytest.approx(np.mean(naive))
        assert board.entry(enc).mean_score == pytest.approx(values[:, e].mean())


def test_holm_and_nemenyi_by_hand() -> None:
    from gpfm.eval.run.significance import holm, nemenyi_cd

    # sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x, then running maximum
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    # q_0.05 of Demšar (2006), Table 5: k = 2..5 -> 1.960, 2.343, 2.569, 2.728
    for k, q in ((2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728)):
        assert nemenyi_cd(k, 10) == pytest.approx(q * np.sqrt(k * (k + 1) / 60), abs=2e-3)


def test_pairwise_wilcoxon_by_hand() -> None:
    from gpfm.eval.run.significance import pairwise_wilcoxon

    scores = {f"t{i}": {"A": 0.9 + 0.01 * i, "B": 0.8} for i in range(6)}
    scores["loss"] = {"A": 0.1, "B": 0.3}  # lower is better: A better here too
    direction = {t: t != "loss" for t in scores}
    (test,) = pairwise_wilcoxon(scores, direction, ["A", "B"])
    assert (test.n_tasks, test.wins_a, test.wins_b) == (7, 7, 0)
    assert test.p_value == pytest.approx(2 / 2**7)  # exact: all 7 signed ranks positive, two-sided
    tied = pairwise_wilcoxon({"t": {"A": 1.0, "B": 1.0}}, {"t": True}, ["A", "B"])[0]
    assert tied.p_value == 1.0 and tied.wins_a == tied.wins_b == 0


def test_leaderboard_significance_fields(rows: list[ResultRow]) -> None:
    from gpfm.eval.run.significance import nemenyi_cd

    board = aggregate(rows).overall
    assert board.complete_units == ["t1", "t2", "t3"]
    assert board.complete_ranks == pytest.approx({"A": 2.0, "B": 5.5 / 3, "C": 6.5 / 3})
    assert board.critical_difference == pytest.approx(nemenyi_cd(3, 3))
    pairs = {(t.a, t.b): t for t in board.pairwise}
    assert set(pairs) == {("A", "B"), ("A", "C"), ("B", "C")}
    assert pairs[("A", "C")].n_tasks == 3 and pairs[("A", "B")].n_tasks == 4  # shared tasks only
    assert (pairs[("A", "B")].wins_a, pairs[("A", "B")].wins_b) == (1, 2)  # t1 A; t2 (error) and t5 B


def test_report_with_three_encoders_draws_cd_diagram(rows: list[ResultRow], tmp_path) -> None:
    from gpfm.eval.report import build_report_html
    from gpfm.eval.run.results import ResultsTable

    text = build_report_html(ResultsTable(rows=rows, meta={"suite": "hand"}), tmp_path)
    assert 'alt="critical difference diagram"' in text and "Pairwise Wilcoxon" in text
    assert "p = " in text  # Friedman
