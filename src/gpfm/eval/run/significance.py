"""Significance of cross-task differences between encoders: Wilcoxon + Holm, Nemenyi CD.

* **Pairwise Wilcoxon signed-rank** over the tasks both encoders have a number for, on values oriented so that
  larger is better, two-sided (``scipy.stats.wilcoxon``, ``zero_method="wilcox"``: tied tasks are dropped).
  With fewer than 6 informative tasks no difference can reach p < 0.05.
* **Holm step-down correction** of the m pairwise p-values: sort ``p_(1) ≤ … ≤ p_(m)``; the adjusted value is
  ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j))``.
* **Nemenyi critical difference** for k encoders ranked on N tasks (Demšar 2006):
  ``CD = q_α · sqrt(k (k + 1) / (6 N))`` with ``q_α = Q_{1−α}(k, ∞) / √2``, ``Q`` the studentized range
  distribution. Two encoders whose average ranks differ by less than CD are not significantly different.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import studentized_range, wilcoxon


@dataclass
class PairwiseTest:
    """One encoder pair.

    Attributes:
        a: first encoder.
        b: second encoder.
        n_tasks: tasks both have a number for.
        wins_a: tasks where ``a`` is strictly better.
        wins_b: tasks where ``b`` is strictly better.
        p_value: two-sided Wilcoxon p (1.0 when every task ties or fewer than 2 tasks are shared).
        p_holm: Holm-adjusted p over all pairs.
    """

    a: str
    b: str
    n_tasks: int
    wins_a: int
    wins_b: int
    p_value: float
    p_holm: float = 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = [0.0] * m
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[idx])))
        adjusted[idx] = running
    return adjusted


def pairwise_wilcoxon(
    scores: Mapping[str, Mapping[str, float]], higher_is_better: Mapping[str, bool], encoders: Sequence[str]
) -> list[PairwiseTest]:
    """Wilcoxon signed-rank test for every encoder pair, Holm-corrected.

    Args:
        scores: task → encoder → primary metric value.
        higher_is_better: task → direction of its metric.
        encoders: the encoders to compare (pairs in this order).
    """
    tests: list[PairwiseTest] = []
    for i, a in enumerate(encoders):
        for b in encoders[i + 1 :]:
            shared = [t for t in scores if a in scores[t] and b in scores[t]]
            sign = np.array([1.0 if higher_is_better[t] else -1.0 for t in shared])
            diff = sign * np.array([scores[t][a] - scores[t][b] for t in shared])
            if np.count_nonzero(diff) == 0:
                p = 1.0
            else:
                p = float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
            tests.append(PairwiseTest(a, b, len(shared), int((diff > 0).sum()), int((diff < 0).sum()), p))
    for test, adjusted in zip(tests, holm([t.p_value for t in tests]), strict=True):
        test.p_holm = adjusted
    return tests


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks for ``k`` encoders on ``n`` tasks (module docstring)."""
    if k < 2 or n < 1:
        raise ValueError(f"Nemenyi CD needs at least 2 encoders and 1 task (got k={k}, n={n})")
    q_alpha = studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q_alpha * math.sqrt(k * (k + 1) / (6 * n)))
