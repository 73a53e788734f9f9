"""Cross-task aggregation: mean score AND average rank per encoder, per family, saturated apart.

Definitions (``T_e`` = the ranked tasks encoder ``e`` has a number for):

* **Mean score** of ``e``: ``(1/|T_e|) Σ_{t ∈ T_e} v_{t,e}``, the unweighted mean of the primary metric.
  It is only comparable between encoders with the same task set; :attr:`EncoderSummary.n_tasks` says.
* **Rank** on task ``t``: the encoders with a number on ``t`` are ranked by the primary metric, 1 = best
  (descending values for higher-is-better metrics, ascending for lower-is-better), ties get the average of
  the ranks they span (``scipy.stats.rankdata(method="average")``: two encoders tied for best both get 1.5).
* **Average rank** of ``e``: ``(1/|T_e|) Σ_{t ∈ T_e} rank_{t,e}``.
* **Firsts**: tasks where ``e`` has the best value (ties for best count for every tied encoder).
* **Friedman test** over the tasks every encoder ran (needs ≥ 3 encoders and ≥ 2 such tasks), with the
  Nemenyi critical difference of the average ranks on those tasks, and pairwise Wilcoxon signed-rank tests
  with Holm correction (:mod:`gpfm.eval.run.significance`).

A task enters the headline aggregate through its headline protocol (the first one the suite lists), so a
task evaluated with two probe variants is not counted twice; :func:`aggregate` with ``headline_only=False``
ranks every task × protocol unit instead. Tasks flagged ``saturated`` are aggregated separately.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import friedmanchisquare, rankdata

from gpfm.eval.run.results import ResultRow
from gpfm.eval.run.significance import PairwiseTest, nemenyi_cd, pairwise_wilcoxon


@dataclass
class EncoderSummary:
    """One encoder's aggregate over a set of ranked units.

    Attributes:
        encoder: encoder name.
        mean_score: mean primary metric over the units it ran (None when it ran none).
        average_rank: mean rank over the units it ran.
        n_tasks: units it has a number for.
        n_first: units where it is best (ties included).
        n_failed: units where it has no number (failed or skipped).
    """

    encoder: str
    mean_score: float | None
    average_rank: float | None
    n_tasks: int
    n_first: int
    n_failed: int = 0


@dataclass
class Leaderboard:
    """Aggregates of one group of units (all non-saturated tasks, one family, or the saturated tasks).

    Attributes:
        name: ``overall``, a family / ``family/subgroup`` name, or ``saturated``.
        entries: encoder summaries, best average rank first (ties broken by mean score, then name).
        units: ``task`` or ``task [protocol]`` labels of the ranked units, in order.
        scores: unit → encoder → primary metric value.
        ranks: unit → encoder → rank (1 = best).
        metrics: unit → primary metric name.
        friedman_p: p-value of the Friedman test over the complete units, or None when not computable.
        complete_units: units every encoder has a number for (the ones the Friedman/Nemenyi tests use).
        complete_ranks: encoder → average rank over the complete units.
        critical_difference: Nemenyi CD (α 0.05) of those average ranks (≥ 3 encoders, ≥ 2 complete units).
        pairwise: Wilcoxon signed-rank tests of every encoder pair over shared units, Holm-corrected.
    """

    name: str
    entries: list[EncoderSummary]
    units: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    ranks: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    friedman_p: float | None = None
    complete_units: list[str] = field(default_factory=list)
    complete_ranks: dict[str, float] = field(default_factory=dict)
    critical_difference: float | None = None
    pairwise: list[PairwiseTest] = field(default_factory=list)

    def entry(self, encoder: str) -> EncoderSummary:
        """The summary of ``encoder``."""
        for e in self.entries:
            if e.encoder == encoder:
                return e
        raise KeyError(f"encoder {encoder!r} not in leaderboard {self.name!r}")


@dataclass
class Aggregate:
    """Everything the report shows about cross-task standing.

    Attributes:
        overall: all non-saturated units.
        families: per ``family`` and per ``family/subgroup`` leaderboards (non-saturated).
        saturated: the saturated units alone (None when the suite flags none).
        encoders: encoder names considered.
        complete: every encoder has a number on every overall unit (mean scores comparable).
    """

    overall: Leaderboard
    families: dict[str, Leaderboard]
    saturated: Leaderboard | None
    encoders: list[str]
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (written as ``leaderboard.json``)."""
        return asdict(self)


def rank_values(values: Iterable[float], higher_is_better: bool = True) -> np.ndarray:
    """Ranks of ``values``, 1 = best, ties averaged (``rankdata(method='average')`` on oriented values)."""
    arr = np.asarray(list(values), dtype=float)
    return rankdata(-arr if higher_is_better else arr, method="average")


def _unit(row: ResultRow, headline_only: bool) -> str:
    return row.task if headline_only else f"{row.task} [{row.protocol}]"


def leaderboard(
    name: str, rows: list[ResultRow], encoders: list[str], headline_only: bool = True
) -> Leaderboard:
    """Rank encoders over the units in ``rows`` (see the module docstring for the formulas)."""
    units: list[str] = []
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    direction: dict[str, bool] = {}
    metrics: dict[str, str] = {}
    for r in rows:
        if headline_only and not r.headline:
            continue
        unit = _unit(r, headline_only)
        if unit not in direction:
            units.append(unit)
            direction[unit], metrics[unit] = r.higher_is_better, r.primary_metric or ""
        if r.ok:
            scores[unit][r.encoder] = float(r.value)  # type: ignore[arg-type]
    units = [u for u in units if scores[u]]  # a task nobody has a number for is not ranked (see failures)
    ranks: dict[str, dict[str, float]] = {}
    for unit in units:
        names = [e for e in encoders if e in scores[unit]]
        if names:
            ranked = rank_values([scores[unit][e] for e in names], direction[unit])
            ranks[unit] = {e: float(rk) for e, rk in zip(names, ranked, strict=True)}
        else:
            ranks[unit] = {}
    entries = []
    for enc in encoders:
        mine = [u for u in units if enc in scores[u]]
        vals = [scores[u][enc] for u in mine]
        rks = [ranks[u][enc] for u in mine]
        firsts = sum(1 for u in mine if ranks[u][enc] == min(ranks[u].values()))
        entries.append(
            EncoderSummary(
                encoder=enc,
                mean_score=float(np.mean(vals)) if vals else None,
                average_rank=float(np.mean(rks)) if rks else None,
                n_tasks=len(mine),
                n_first=firsts,
                n_failed=len(units) - len(mine),
            )
        )
    entries.sort(
        key=lambda e: (e.average_rank is None, e.average_rank or 0.0, -(e.mean_score or 0.0), e.encoder)
    )
    complete_units = [u for u in units if all(e in scores[u] for e in encoders)]
    friedman_p, cd = None, None
    if len(encoders) >= 3 and len(complete_units) >= 2:
        oriented = [
            [scores[u][e] if direction[u] else -scores[u][e] for u in complete_units] for e in encoders
        ]
        if np.ptp(np.asarray(oriented)) > 0:
            friedman_p = float(friedmanchisquare(*oriented).pvalue)
        cd = nemenyi_cd(len(encoders), len(complete_units))
    complete_ranks = (
        {e: float(np.mean([ranks[u][e] for u in complete_units])) for e in encoders} if complete_units else {}
    )
    pairwise = (
        pairwise_wilcoxon({u: scores[u] for u in units}, direction, encoders) if len(encoders) > 1 else []
    )
    return Leaderboard(
        name=name,
        entries=entries,
        units=units,
        scores={u: dict(scores[u]) for u in units},
        ranks=ranks,
        metrics=metrics,
        friedman_p=friedman_p,
        complete_units=complete_units,
        complete_ranks=complete_ranks,
        critical_difference=cd,
        pairwise=pairwise,
    )


def aggregate(
    rows: list[ResultRow], encoders: list[str] | None = None, headline_only: bool = True
) -> Aggregate:
    """Overall, per-family and saturated leaderboards of a results table's rows.

    Args:
        rows: result rows (any status; only ``ok`` rows carry numbers).
        encoders: encoders to rank (default: every encoder in ``rows``, first-seen order).
        headline_only: aggregate each task through its headline protocol only (default), or every
            task × protocol unit.
    """
    encoders = encoders or list(dict.fromkeys(r.encoder for r in rows))
    main = [r for r in rows if not r.saturated]
    sat = [r for r in rows if r.saturated]
    overall = leaderboard("overall", main, encoders, headline_only)
    groups: dict[str, list[ResultRow]] = defaultdict(list)
    for r in main:
        groups[r.family].append(r)
        if r.group != r.family:
            groups[r.group].append(r)
    families = {g: leaderboard(g, groups[g], encoders, headline_only) for g in sorted(groups)}
    complete = all(len(overall.scores[u]) == len(encoders) for u in overall.units)
    return Aggregate(
        overall=overall,
        families=families,
        saturated=leaderboard("saturated", sat, encoders, headline_only) if sat else None,
        encoders=encoders,
        complete=complete,
    )
