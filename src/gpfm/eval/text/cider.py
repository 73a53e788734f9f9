"""CIDEr-D (Vedantam et al., CVPR 2015), as computed by the COCO caption evaluation code (pycocoevalcap).

Notation: a corpus of I samples, each with a candidate c_i and references S_i = {s_i1…s_im}; n = 1…4.

* Document frequency df(g) = number of samples whose reference set contains n-gram g (references only).
* TF-IDF vector of a sentence x for order n: w_n(g) = count_x(g) · (log I − log max(1, df(g))).
* Per reference: sim_n(c, s) = Σ_g min(w_c(g), w_s(g)) · w_s(g) / (‖w_c‖·‖w_s‖)   (clipped: the "-D")
  · exp(−(ℓ(c) − ℓ(s))² / (2σ²)) with σ = 6, where ℓ(x) is the number of bigrams of x (the COCO code's
  length; the difference equals the word-length difference whenever both texts are non-empty). A zero norm
  leaves the unnormalised sum (which is then 0).
* CIDEr-D_i = 10 · (1/m) Σ_j (1/4) Σ_n sim_n(c_i, s_ij); the corpus score is the mean over samples.

The scale is 0…~10 (COCO reports ×1, e.g. 1.2); identical candidate and single reference with unique n-grams
scores 10. Because df comes from the evaluated references, a score depends on the whole test corpus.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from gpfm.eval.text.bleu import Tokens

SIGMA = 6.0
MAX_N = 4


def _all_ngrams(tokens: Tokens, max_n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_n + 1):
        counts.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return counts


def _tfidf(
    counts: Counter[tuple[str, ...]], df: Counter[tuple[str, ...]], log_docs: float, max_n: int
) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
    vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(max_n)]
    sq = [0.0] * max_n
    bigrams = 0
    for gram, tf in counts.items():
        n = len(gram) - 1
        weight = tf * (log_docs - math.log(max(1.0, df[gram])))
        vec[n][gram] = weight
        sq[n] += weight * weight
        if n == 1:
            bigrams += tf
    return vec, [math.sqrt(s) for s in sq], bigrams


def corpus_cider_d(
    candidates: Sequence[Tokens],
    references: Sequence[Sequence[Tokens]],
    max_n: int = MAX_N,
    sigma: float = SIGMA,
) -> tuple[float, list[float]]:
    """Mean CIDEr-D over the corpus and the per-sample scores (see the module docstring for the formula)."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    if not candidates:
        raise ValueError("CIDEr-D needs at least one sample")
    ref_counts = [[_all_ngrams(r, max_n) for r in refs] for refs in references]
    df: Counter[tuple[str, ...]] = Counter()
    for counts in ref_counts:
        df.update(set().union(*(c.keys() for c in counts)) if counts else set())
    log_docs = math.log(float(len(candidates)))
    scores = []
    for cand, refs in zip(candidates, ref_counts, strict=True):
        if not refs:
            raise ValueError("CIDEr-D needs at least one reference per sample")
        vec_c, norm_c, len_c = _tfidf(_all_ngrams(cand, max_n), df, log_docs, max_n)
        total = 0.0
        for ref in refs:
            vec_r, norm_r, len_r = _tfidf(ref, df, log_docs, max_n)
            penalty = math.exp(-((len_c - len_r) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                val = sum(min(w, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, w in vec_c[n].items())
                if norm_c[n] != 0 and norm_r[n] != 0:
                    val /= norm_c[n] * norm_r[n]
                total += val * penalty
        scores.append(10.0 * total / max_n / len(refs))
    return sum(scores) / len(scores), scores
