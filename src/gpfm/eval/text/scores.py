"""All generation metrics of one corpus at once: BLEU-1…4, ROUGE-L, CIDEr-D, corpus-level and per sample.

METEOR is not computed: nltk's implementation needs the WordNet corpus, which is a separate download that an
offline install does not have, and the COCO implementation needs Java. Scores are reported on [0, 1] except
CIDEr-D (0…10, the COCO scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpfm.eval.text.bleu import corpus_bleu, sentence_bleu
from gpfm.eval.text.cider import corpus_cider_d
from gpfm.eval.text.rouge import COCO_BETA, corpus_rouge_l
from gpfm.eval.text.tokenizer import metric_tokens

METRIC_NAMES: tuple[str, ...] = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr")


@dataclass
class CaptionScores:
    """Corpus scores and per-sample scores (``BLEU_4`` smoothed sentence BLEU, ``ROUGE_L``, ``CIDEr``)."""

    corpus: dict[str, float]
    per_sample: list[dict[str, float]]


def score_texts(
    generated: Sequence[str], references: Sequence[Sequence[str]], rouge_beta: float = COCO_BETA
) -> CaptionScores:
    """Score generated texts against their reference texts (raw strings; tokenised by :func:`metric_tokens`).

    Args:
        generated: one generated text per sample.
        references: per sample, one or more reference texts.
        rouge_beta: β of ROUGE-L (1.2 = pycocoevalcap/HistGen).

    Returns:
        corpus metrics (the keys of :data:`METRIC_NAMES` plus ``mean6``, the mean of all six with CIDEr
        divided by 10) and per-sample metrics.
    """
    hyps = [metric_tokens(g) for g in generated]
    refs = [[metric_tokens(r) for r in rs] for rs in references]
    corpus = corpus_bleu(hyps, refs, max_n=4)
    corpus["ROUGE_L"], rouge_each = corpus_rouge_l(hyps, refs, beta=rouge_beta)
    corpus["CIDEr"], cider_each = corpus_cider_d(hyps, refs)
    corpus["mean6"] = (sum(corpus[k] for k in METRIC_NAMES[:5]) + corpus["CIDEr"] / 10.0) / 6.0
    per_sample = [
        {"BLEU_4": sentence_bleu(h, r, order=4), "ROUGE_L": rl, "CIDEr": ci}
        for h, r, rl, ci in zip(hyps, refs, rouge_each, cider_each, strict=True)
    ]
    return CaptionScores(corpus=corpus, per_sample=per_sample)
