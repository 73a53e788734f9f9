"""Word-level tokenizer for reports, captions, questions and answers, built from the training texts.

Normalisation (the HistGen/R2Gen habit, made explicit): lower-case; every run of letters/digits (with inner
``-``, ``'``, ``/``, ``.`` between digits such as ``3.5``) is a word; ``.`` ``,`` ``;`` ``:`` ``?`` ``!``
``(``
``)`` are kept as their own tokens (a sentence end must survive so that decoding can stop on it); everything
else is a separator. The vocabulary holds the special tokens first (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2,
``<unk>`` 3) and then every word seen at least ``min_freq`` times in the training texts, sorted by descending
frequency then alphabetically, so the same texts always give the same ids.

Metric tokens (:func:`metric_tokens`) drop the punctuation, as pycocoevalcap's PTB tokenizer does before
BLEU/ROUGE/CIDEr, so scores compare words only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PUNCTUATION = frozenset(".,;:?!()")
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)+|[a-z0-9]+(?:['/\-][a-z0-9]+)*|[.,;:?!()]")
_FORMAT = "gpfm.word_tokenizer"
_FORMAT_VERSION = 1


def split_words(text: str) -> list[str]:
    """Normalise and split ``text`` into word and punctuation tokens (see the module docstring)."""
    return _TOKEN_RE.findall(text.lower())


def metric_tokens(text: str) -> list[str]:
    """Words of ``text`` without punctuation: the token lists BLEU, ROUGE-L and CIDEr are computed on."""
    return [t for t in split_words(text) if t not in PUNCTUATION]


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens into text: punctuation attaches to the previous word (``"glands ."`` → ``"glands."``)."""
    out = ""
    for tok in tokens:
        if tok in PUNCTUATION and tok != "(" and out:
            out += tok
        elif out.endswith("("):
            out += tok
        else:
            out += (" " if out else "") + tok
    return out


class WordTokenizer:
    """A frozen word vocabulary with encode/decode and JSON persistence.

    Args:
        words: vocabulary words, without the special tokens (they are always ids 0-3).

    Example:
        >>> tok = WordTokenizer.build(["Benign lung tissue.", "Lung adenocarcinoma."], min_freq=1)
        >>> tok.decode(tok.encode("benign lung tissue.", add_bos=True, add_eos=True))
        'benign lung tissue.'
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, words: Sequence[str]) -> None:
        dupes = sorted(w for w, c in Counter(words).items() if c > 1)
        if dupes or set(words) & set(SPECIAL_TOKENS):
            raise ValueError(f"tokenizer words must be unique and exclude special tokens; got {dupes[:5]}")
        self.itos: list[str] = [*SPECIAL_TOKENS, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 3, max_size: int | None = None) -> WordTokenizer:
        """Build from training texts, keeping words seen at least ``min_freq`` times.

        Args:
            texts: training texts only (building on val/test texts would leak them).
            min_freq: frequency cut-off; rarer words map to ``<unk>``.
            max_size: optional cap on the number of non-special words (most frequent kept).
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(tok for text in texts for tok in split_words(text))
        kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[:max_size]
        if not kept:
            raise ValueError(
                f"no word occurs >= {min_freq} times in the {len(counts)} distinct training words"
            )
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of ``<pad>``, ``<bos>``, ``<eos>`` and ``<unk>``."""
        return frozenset(range(len(SPECIAL_TOKENS)))

    def encode(
        self, text: str, *, add_bos: bool = False, add_eos: bool = False, max_len: int | None = None
    ) -> list[int]:
        """Token ids of ``text``; words outside the vocabulary become ``<unk>``.

        ``max_len`` caps the total length including BOS/EOS; a truncated text keeps its EOS so that a model
        trained on it still learns to stop.
        """
        ids = [self.stoi.get(tok, self.unk_id) for tok in split_words(text)]
        if max_len is not None:
            budget = max_len - int(add_bos) - int(add_eos)
            if budget < 1:
                raise ValueError(f"max_len {max_len} leaves no room for words")
            ids = ids[:budget]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
        """Text of ``ids``: stops at ``<eos>``, skips ``<pad>``/``<bos>``, keeps ``<unk>`` visible."""
        words: list[str] = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            if i in (self.pad_id, self.bos_id, self.eos_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return detokenize(words)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (format tag, version, full id → token list)."""
        return {"format": _FORMAT, "version": _FORMAT_VERSION, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict[str, object], source: str = "<dict>") -> WordTokenizer:
        """Inverse of :meth:`to_dict`; ``source`` names the origin in error messages."""
        itos = data.get("itos") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(itos, list):
            raise ValueError(f"{source}: not a gpfm word tokenizer (expected format {_FORMAT!r} with 'itos')")
        if tuple(itos[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"{source}: special tokens must come first as {SPECIAL_TOKENS}")
        return cls([str(w) for w in itos[len(SPECIAL_TOKENS) :]])

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON atomically."""
        from gpfm.atomic import write_json_atomic

        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Read a vocabulary written by :meth:`save`."""
        import json

        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read tokenizer JSON ({exc})") from exc
        return cls.from_dict(data, source=str(path))
