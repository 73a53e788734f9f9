"""Text side of the multimodal task families: tokenizer, generation metrics, dataset readers."""

from gpfm.eval.text.bleu import corpus_bleu, sentence_bleu
from gpfm.eval.text.cider import corpus_cider_d
from gpfm.eval.text.rouge import corpus_rouge_l, rouge_l
from gpfm.eval.text.scores import METRIC_NAMES, CaptionScores, score_texts
from gpfm.eval.text.tokenizer import SPECIAL_TOKENS, WordTokenizer, metric_tokens, split_words

__all__ = [
    "METRIC_NAMES",
    "SPECIAL_TOKENS",
    "CaptionScores",
    "WordTokenizer",
    "corpus_bleu",
    "corpus_cider_d",
    "corpus_rouge_l",
    "metric_tokens",
    "rouge_l",
    "score_texts",
    "sentence_bleu",
    "split_words",
]
