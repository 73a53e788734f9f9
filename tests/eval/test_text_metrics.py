"""Generation metrics against reference libraries (nltk, sacrebleu, rouge-score) and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpfm.eval.text.bleu import bleu_from_stats, bleu_stats, corpus_bleu, sentence_bleu
from gpfm.eval.text.cider import corpus_cider_d
from gpfm.eval.text.rouge import corpus_rouge_l, lcs_length, rouge_l
from gpfm.eval.text.scores import score_texts

# Every hypothesis has >= 4 words, where nltk and sacrebleu agree on the n-gram denominators (see bleu.py).
HYPS = [
    "the tumour shows well differentiated glands with mild atypia",
    "benign lung tissue with normal alveoli",
    "squamous cell carcinoma with keratin pearls and intercellular bridges",
    "invasive ductal carcinoma grade two of the breast",
]
REFS = [
    ["the tumour shows well formed glands with mild nuclear atypia", "well differentiated adenocarcinoma"],
    ["benign lung tissue with unremarkable alveoli"],
    ["keratinizing squamous cell carcinoma with keratin pearls", "squamous cell carcinoma with bridges"],
    ["invasive ductal carcinoma of the breast grade two"],
]
H = [h.split() for h in HYPS]
R = [[r.split() for r in rs] for rs in REFS]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_corpus_bleu_matches_nltk(order: int) -> None:
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    ours = corpus_bleu(H, R, max_n=4)[f"BLEU_{order}"]
    ref = nltk_corpus_bleu(R, H, weights=tuple([1.0 / order] * order))
    assert ours == pytest.approx(ref, abs=1e-12)
    assert 0.0 < ours < 1.0


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_corpus_bleu_matches_sacrebleu(order: int) -> None:
    from sacrebleu.metrics import BLEU

    # sacrebleu wants reference streams: stream j holds the j-th reference of every sample (None if absent).
    streams = [[rs[j] if j < len(rs) else None for rs in REFS] for j in range(2)]
    bleu = BLEU(tokenize="none", smooth_method="none", max_ngram_order=order, force=True)
    ref = bleu.corpus_score(HYPS, streams).score / 100.0
    assert corpus_bleu(H, R)[f"BLEU_{order}"] == pytest.approx(ref, abs=1e-9)


def test_sentence_bleu_matches_nltk_method1() -> None:
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

    smooth = SmoothingFunction(epsilon=0.1).method1
    for hyp, refs in zip(H, R, strict=True):
        assert sentence_bleu(hyp, refs) == pytest.approx(
            nltk_sentence_bleu(refs, hyp, smoothing_function=smooth)
        )
    # A hypothesis with no 4-gram match still scores > 0 once smoothed, and 0 at corpus level.
    hyp, refs = "lung tissue benign normal".split(), [["benign", "lung", "tissue"]]
    assert sentence_bleu(hyp, refs) > 0.0
    assert corpus_bleu([hyp], [refs])["BLEU_4"] == 0.0


def test_bleu_perfect_and_brevity_penalty_by_hand() -> None:
    assert corpus_bleu([["a", "b", "c", "d"]], [[["a", "b", "c", "d"]]])["BLEU_4"] == pytest.approx(1.0)
    # hyp "a b" vs ref "a b c d": p1 = p2 = 1, BP = exp(1 - 4/2).
    assert corpus_bleu([["a", "b"]], [[["a", "b", "c", "d"]]])["BLEU_2"] == pytest.approx(math.exp(-1.0))
    # Closest reference length: tie between 3 and 5 for a 4-word hypothesis -> the shorter (3) -> BP = 1.
    out = corpus_bleu([["a", "b", "x", "y"]], [[["a", "b", "c"], ["a", "b", "c", "d", "e"]]])
    assert out["BLEU_1"] == pytest.approx(2 / 4)


def test_rouge_l_matches_rouge_score() -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for hyp, refs in zip(HYPS, REFS, strict=True):
        ref = scorer.score(refs[0], hyp)["rougeL"].fmeasure
        assert rouge_l(hyp.split(), [refs[0].split()], beta=1.0) == pytest.approx(ref, abs=1e-12)


def test_rouge_l_coco_multi_reference_by_hand() -> None:
    cand = "a b c d".split()
    refs = [["a", "x", "c"], ["a", "b", "c", "d", "e", "f"]]
    assert lcs_length(cand, refs[0]) == 2 and lcs_length(cand, refs[1]) == 4
    p, r, beta = max(2 / 4, 4 / 4), max(2 / 3, 4 / 6), 1.2  # max P and max R over references separately
    expected = (1 + beta**2) * p * r / (r + beta**2 * p)
    assert rouge_l(cand, refs) == pytest.approx(expected)
    mean, each = corpus_rouge_l([cand, ["z"]], [refs, [["y"]]])
    assert each[1] == 0.0 and mean == pytest.approx(expected / 2)


def test_cider_d_worked_example() -> None:
    """Two samples, unigram-bigram texts; every quantity of the COCO formula written out by hand."""
    cands = [["a", "b"], ["a", "c"]]
    refs = [[["a", "b"]], [["c", "d"]]]
    # df: "a","b","a b" in sample 0; "c","d","c d" in sample 1 -> all df = 1, log I = log 2, idf = log 2.
    idf = math.log(2.0)
    # Sample 0: candidate == reference; all weights idf; n=1: cos = 1, n=2: cos = 1, n=3,4 empty -> 0.
    s0 = 10.0 * (1.0 + 1.0 + 0.0 + 0.0) / 4
    # Sample 1: cand unigrams a (df 1 -> idf), c (idf); ref unigrams c, d.  n=1: min(idf, idf)*idf over "c"
    # = idf^2, norms sqrt(2) idf each -> 1/2. Bigrams "a c" vs "c d": no overlap -> 0.
    # Equal lengths -> no penalty.
    s1 = 10.0 * (idf**2 / (math.sqrt(2) * idf * math.sqrt(2) * idf)) / 4
    mean, each = corpus_cider_d(cands, refs)
    assert each == pytest.approx([s0, s1])
    assert mean == pytest.approx((s0 + s1) / 2)


def test_cider_d_length_penalty_and_clipping_by_hand() -> None:
    # Three samples so that idf differs: "x" appears in two reference sets (df 2), "y", "z" in one.
    cands = [["x", "x", "y"], ["z"], ["w"]]
    refs = [[["x", "y"]], [["x", "z"]], [["w"]]]
    log_i = math.log(3.0)
    w_x, w_y, w_z = log_i - math.log(2.0), log_i, log_i
    # Sample 0 unigrams: cand x:2*w_x, y:w_y ; ref x:w_x, y:w_y -> clipped sum min(2w_x,w_x)*w_x + w_y*w_y.
    num = w_x * w_x + w_y * w_y
    cos1 = num / (math.sqrt((2 * w_x) ** 2 + w_y**2) * math.sqrt(w_x**2 + w_y**2))
    # Bigrams: cand "x x","x y" vs ref "x y" (df 1 -> weight log 3): min(l,l)*l / (sqrt(2) l * l) = 1/sqrt(2).
    cos2 = 1.0 / math.sqrt(2.0)
    # Lengths in bigrams: 2 vs 1 -> exp(-1/72).
    s0 = 10.0 * (cos1 + cos2) * math.exp(-1.0 / 72.0) / 4
    _, each = corpus_cider_d(cands, refs)
    assert each[0] == pytest.approx(s0)
    # Sample 1: cand "z" vs ref "x z": unigram cos = w_z^2 / (w_z * sqrt(w_x^2 + w_z^2));
    # bigram lengths 0 vs 1.
    s1 = 10.0 * (w_z / math.sqrt(w_x**2 + w_z**2)) * math.exp(-1.0 / 72.0) / 4
    assert each[1] == pytest.approx(s1)
    assert w_z > 0 and each[2] == pytest.approx(10.0 * 1.0 / 4)


def test_score_texts_strips_punctuation_and_reports_all_metrics() -> None:
    out = score_texts(["Benign lung tissue."], [["benign lung tissue"]])
    assert set(out.corpus) >= {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr", "mean6"}
    assert out.corpus["BLEU_1"] == pytest.approx(1.0)
    assert out.corpus["BLEU_4"] == 0.0  # three words have no 4-gram
    assert out.per_sample[0]["ROUGE_L"] == pytest.approx(1.0)
    # A single-sample corpus has idf log(1) - log(1) = 0 everywhere -> CIDEr 0 by construction.
    assert out.corpus["CIDEr"] == 0.0


def test_bleu_sufficient_statistics_reproduce_corpus_bleu_on_resamples() -> None:
    stats = bleu_stats(H, R)
    full = corpus_bleu(H, R)
    for k in range(1, 5):
        assert bleu_from_stats(stats.sum(0), k) == pytest.approx(full[f"BLEU_{k}"], abs=1e-12)
    idx = [0, 0, 2, 3, 3, 3]  # a bootstrap resample with repeats
    resampled = corpus_bleu([H[i] for i in idx], [R[i] for i in idx])["BLEU_4"]
    assert bleu_from_stats(stats[idx].sum(0), 4) == pytest.approx(resampled, abs=1e-12)
    vectorised = bleu_from_stats(np.stack([stats[[0, 1]].sum(0), stats[[1]].sum(0)]), 4)
    assert vectorised[0] == pytest.approx(corpus_bleu(H[:2], R[:2])["BLEU_4"], abs=1e-12)
    assert vectorised[1] == pytest.approx(corpus_bleu(H[1:2], R[1:2])["BLEU_4"], abs=1e-12)
    no_match = bleu_stats([["x", "y", "z", "w"]], [[["a", "b", "c", "d"]]])
    assert bleu_from_stats(no_match.sum(0), 4) == 0.0
