"""Word tokenizer: normalisation, frequency cut-off, special tokens, round trips, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpfm.eval.text.tokenizer import SPECIAL_TOKENS, WordTokenizer, detokenize, metric_tokens, split_words


def test_split_words_normalises_and_keeps_sentence_punctuation() -> None:
    text = "Tumour 3.5 x 2.0 cm, well-differentiated (grade 1)."
    assert split_words(text) == [
        "tumour",
        "3.5",
        "x",
        "2.0",
        "cm",
        ",",
        "well-differentiated",
        "(",
        "grade",
        "1",
        ")",
        ".",
    ]
    assert metric_tokens(text) == ["tumour", "3.5", "x", "2.0", "cm", "well-differentiated", "grade", "1"]
    assert detokenize(split_words(text)) == "tumour 3.5 x 2.0 cm, well-differentiated (grade 1)."


def test_build_applies_frequency_cut_off_and_orders_deterministically() -> None:
    texts = ["benign lung tissue.", "lung adenocarcinoma.", "lung carcinoma.", "benign tissue."]
    tok = WordTokenizer.build(texts, min_freq=2)
    assert tok.itos[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    # counts: lung 3, . 4, benign 2, tissue 2; adenocarcinoma/carcinoma 1 -> dropped.
    assert tok.itos[len(SPECIAL_TOKENS) :] == [".", "lung", "benign", "tissue"]
    ids = tok.encode("lung adenocarcinoma.", add_bos=True, add_eos=True)
    assert ids == [tok.bos_id, tok.stoi["lung"], tok.unk_id, tok.stoi["."], tok.eos_id]
    assert tok.decode(ids) == "lung <unk>."
    assert tok.decode([tok.stoi["lung"], tok.eos_id, tok.stoi["benign"]]) == "lung"
    with pytest.raises(ValueError, match="no word occurs >= 9"):
        WordTokenizer.build(texts, min_freq=9)


def test_encode_truncation_keeps_eos() -> None:
    tok = WordTokenizer.build(["a b c d e f"], min_freq=1)
    ids = tok.encode("a b c d e f", add_bos=True, add_eos=True, max_len=4)
    assert len(ids) == 4 and ids[0] == tok.bos_id and ids[-1] == tok.eos_id


def test_save_load_round_trip_and_rejects_foreign_json(tmp_path: Path) -> None:
    tok = WordTokenizer.build(["benign lung tissue.", "lung adenocarcinoma."], min_freq=1)
    tok.save(tmp_path / "tok.json")
    again = WordTokenizer.load(tmp_path / "tok.json")
    assert again.itos == tok.itos
    (tmp_path / "bad.json").write_text(json.dumps({"itos": ["x"]}))
    with pytest.raises(ValueError, match=r"bad\.json: not a gpfm word tokenizer"):
        WordTokenizer.load(tmp_path / "bad.json")
