"""ROUGE-L (Lin, 2004): longest-common-subsequence F-measure, averaged over samples.

For a candidate c and references r_1…r_m (token lists):

* P_j = LCS(c, r_j) / |c| and R_j = LCS(c, r_j) / |r_j|;
* P = max_j P_j and R = max_j R_j (pycocoevalcap's multi-reference rule; with one reference it is that
  reference's P and R);
* F_β = (1 + β²)·P·R / (R + β²·P), and 0 when P or R is 0.

The corpus score is the mean of F_β over samples. ``beta=1.2`` is pycocoevalcap's value (HistGen reports
that); ``beta=1`` gives the balanced F1 that Google's ``rouge_score`` reports as ``rougeL.fmeasure``.
"""

from __future__ import annotations

from collections.abc import Sequence

Tokens = Sequence[str]
COCO_BETA = 1.2


def lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence of two token lists (O(|a|·|b|) time, O(|b|) memory)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(candidate: Tokens, references: Sequence[Tokens], beta: float = COCO_BETA) -> float:
    """ROUGE-L F_β of one candidate against its references."""
    if not references:
        raise ValueError("ROUGE-L needs at least one reference")
    if not candidate:
        return 0.0
    precision = recall = 0.0
    for ref in references:
        if not ref:
            continue
        lcs = lcs_length(candidate, ref)
        precision = max(precision, lcs / len(candidate))
        recall = max(recall, lcs / len(ref))
    if precision == 0.0 or recall == 0.0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def corpus_rouge_l(
    candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], beta: float = COCO_BETA
) -> tuple[float, list[float]]:
    """Mean ROUGE-L over samples and the per-sample scores."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    if not candidates:
        raise ValueError("ROUGE-L needs at least one sample")
    scores = [rouge_l(c, r, beta) for c, r in zip(candidates, references, strict=True)]
    return sum(scores) / len(scores), scores
