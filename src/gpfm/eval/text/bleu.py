"""BLEU-1…4 (Papineni et al., ACL 2002), corpus-level, plus smoothed sentence BLEU for per-sample tables.

For hypotheses h_i with reference sets R_i (token lists), n-gram order n:

* clipped precision p_n = Σ_i Σ_g min(c_{h_i}(g), max_{r∈R_i} c_r(g)) / Σ_i Σ_g c_{h_i}(g), summed over the
  corpus before dividing (corpus-level, not a mean of sentence scores);
* brevity penalty BP = 1 if c > r else exp(1 − r/c) (0 when c = 0), with c = Σ_i |h_i| and r = Σ_i the length
  of the reference closest in length to h_i (ties → the shorter reference);
* BLEU-N = BP · exp(Σ_{n=1..N} (1/N) log p_n), and 0 when any p_n = 0 (no smoothing at corpus level).

This equals ``nltk.translate.bleu_score.corpus_bleu(..., weights=(1/N,)*N)`` and ``sacrebleu``'s
``BLEU(tokenize="none", smooth_method="none", max_ngram_order=N)`` (÷100) on pre-tokenised text, with one
documented difference: nltk counts a hypothesis shorter than n words as one n-gram slot in the denominator
(``max(1, count)``), sacrebleu and we count zero. pycocoevalcap (HistGen's scorer) adds 1e-9/1e-15 guards and
so differs in the ~9th decimal.

Sentence BLEU uses the "floor"/nltk ``method1`` smoothing: a zero n-gram count becomes ε = 0.1 matches, so a
single sample scores > 0 when it shares a word with its reference.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

Tokens = Sequence[str]


def ngram_counts(tokens: Tokens, n: int) -> Counter[tuple[str, ...]]:
    """Counts of the n-grams of ``tokens``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _closest_ref_length(hyp_len: int, refs: Sequence[Tokens]) -> int:
    return min((len(r) for r in refs), key=lambda ref_len: (abs(ref_len - hyp_len), ref_len))


def _sentence_stats(hyp: Tokens, refs: Sequence[Tokens], max_n: int) -> tuple[list[int], list[int], int, int]:
    """Clipped matches and totals per order, hypothesis length and closest reference length."""
    if not refs:
        raise ValueError("every hypothesis needs at least one reference")
    matches, totals = [], []
    for n in range(1, max_n + 1):
        hyp_counts = ngram_counts(hyp, n)
        max_ref: Counter[tuple[str, ...]] = Counter()
        for ref in refs:
            max_ref |= ngram_counts(ref, n)  # element-wise max over references
        matches.append(sum(min(c, max_ref[g]) for g, c in hyp_counts.items()))
        totals.append(sum(hyp_counts.values()))
    return matches, totals, len(hyp), _closest_ref_length(len(hyp), refs)


def _brevity_penalty(hyp_len: int, ref_len: int) -> float:
    if hyp_len == 0:
        return 0.0
    return 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)


def _combine(
    matches: Sequence[float], totals: Sequence[int], hyp_len: int, ref_len: int, order: int
) -> float:
    logs = []
    for n in range(order):
        if matches[n] <= 0 or totals[n] == 0:
            return 0.0
        logs.append(math.log(matches[n] / totals[n]))
    return _brevity_penalty(hyp_len, ref_len) * math.exp(sum(logs) / order)


def corpus_bleu(
    hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]], max_n: int = 4
) -> dict[str, float]:
    """Corpus BLEU-1…``max_n``.

    Args:
        hypotheses: one token list per sample.
        references: per sample, a list of reference token lists.
        max_n: highest n-gram order.

    Returns:
        ``{"BLEU_1": …, …, "BLEU_<max_n>": …}`` in [0, 1].
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    if not hypotheses:
        raise ValueError("BLEU needs at least one sample")
    matches, totals, hyp_len, ref_len = [0] * max_n, [0] * max_n, 0, 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        m, t, h, r = _sentence_stats(hyp, refs, max_n)
        matches = [a + b for a, b in zip(matches, m, strict=True)]
        totals = [a + b for a, b in zip(totals, t, strict=True)]
        hyp_len, ref_len = hyp_len + h, ref_len + r
    return {f"BLEU_{k}": _combine(matches, totals, hyp_len, ref_len, k) for k in range(1, max_n + 1)}


def sentence_bleu(
    hypothesis: Tokens, references: Sequence[Tokens], order: int = 4, epsilon: float = 0.1
) -> float:
    """Smoothed BLEU-``order`` of one sample (zero match counts replaced by ``epsilon``; nltk ``method1``)."""
    matches, totals, hyp_len, ref_len = _sentence_stats(hypothesis, references, order)
    smoothed = [m if m > 0 else (epsilon if t > 0 else 0.0) for m, t in zip(matches, totals, strict=True)]
    return _combine(smoothed, totals, hyp_len, ref_len, order)


def bleu_stats(
    hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]], max_n: int = 4
) -> np.ndarray:
    """Per-sample sufficient statistics of corpus BLEU, for fast bootstrap resampling.

    Returns:
        (N, 2·max_n + 2) float64: clipped matches for n = 1…max_n, n-gram totals, hypothesis length, closest
        reference length. Summing rows over any multiset of samples and passing the sum to
        :func:`bleu_from_stats` gives that multiset's corpus BLEU.
    """
    rows = []
    for hyp, refs in zip(hypotheses, references, strict=True):
        m, t, h, r = _sentence_stats(hyp, refs, max_n)
        rows.append([*m, *t, h, r])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), 2 * max_n + 2)


def bleu_from_stats(summed: np.ndarray, order: int, max_n: int = 4) -> np.ndarray:
    """BLEU-``order`` of summed statistics (``(..., 2·max_n + 2)``, from :func:`bleu_stats`), vectorised."""
    summed = np.asarray(summed, dtype=np.float64)
    matches, totals = summed[..., :order], summed[..., max_n : max_n + order]
    hyp_len, ref_len = summed[..., 2 * max_n], summed[..., 2 * max_n + 1]
    ok = np.all((matches > 0) & (totals > 0), axis=-1) & (hyp_len > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.where(
            ok[..., None], np.log(np.where(matches > 0, matches, 1) / np.where(totals > 0, totals, 1)), 0
        )
        bp = np.where(hyp_len > ref_len, 1.0, np.exp(1.0 - ref_len / np.where(hyp_len > 0, hyp_len, 1)))
    return np.where(ok, bp * np.exp(log_p.sum(-1) / order), 0.0)
