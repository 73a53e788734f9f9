"""``vqa.fusion`` v1: VQA on frozen tile/slide features (in-house baseline [I]).

This is *not* MUMC (GPFM's PathVQA numbers) and its numbers must not be mixed with those. Pipeline: question
encoder (a small trainable transformer by default, or the frozen offline MiniLM sentence encoder with
``question_encoder="minilm"``) fused with the bag features by cross-attention
(:class:`~gpfm.eval.multimodal.vqa_model.VqaFusionModel`); answers are classes of the training answer
vocabulary (answers seen ≥ ``answer_min_freq`` times); AdamW, warmup + cosine, early stopping on val overall
accuracy.

Answers are compared after normalisation (lower-case, collapsed whitespace, trailing ``.`` removed): exact
match. A test answer outside the training vocabulary counts as wrong (its share is reported as
``open_oov_fraction``). Metrics: ``closed_accuracy`` (yes/no and multiple choice), ``open_accuracy`` (exact
match), **``overall_accuracy`` (primary)**, plus the same for a *question-prior baseline* that ignores the
image: the most frequent training answer of the same normalised question, within its choices for a
multiple-choice question (:func:`question_prior_answers`).

95% CIs: percentile bootstrap over test questions (``bootstrap`` = 1,000 resamples, stratified by
closed/open, seed = ``seed``). Artifacts: ``vqa_breakdown`` (JSON ``{"closed": {...}, "open": {...},
"overall": {...}}`` with accuracy, correct, n and baseline accuracy), ``predictions`` (CSV), ``curves``.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gpfm.atomic import write_json_atomic, write_text_atomic
from gpfm.eval.data.multimodal import load_vqa_records
from gpfm.eval.family import Family, register_family
from gpfm.eval.multimodal.data import (
    VqaTaskData,
    cap_bag,
    collate_bags,
    ensure_val_split,
    inference_chunks,
)
from gpfm.eval.multimodal.question_encoders import FrozenMiniLM, TransformerQuestionEncoder
from gpfm.eval.multimodal.training import TrainConfig, describe, fit
from gpfm.eval.multimodal.vqa_model import VqaFusionModel, VqaModelConfig, restrict_to_choices
from gpfm.eval.protocol import Protocol, ProtocolResult, register_protocol, register_task_loader
from gpfm.eval.text.readers import VqaRecord
from gpfm.eval.text.tokenizer import WordTokenizer, split_words

register_family(Family(
    "vqa", "answer questions about slides from their features"))
register_task_loader("vqa_records")(load_vqa_records)

QUESTION_ENCODERS = ("transformer", "minilm")


def normalize_answer(text: str) -> str:
    """Lower-case, collapse whitespace, drop a trailing period: the exact-match form of an answer."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".").strip()


@dataclass
class VqaConfig:
    """Pinned defaults of ``vqa.fusion`` v1."""

    question_encoder: str = "transformer"
    d_model: int = 256
    n_memory: int = 4
    n_heads: int = 4
    n_layers: int = 2
    question_layers: int = 2
    question_min_freq: int = 1
    question_max_len: int = 48
    answer_min_freq: int = 1
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-2
    patience: int = 6
    val_fraction: float = 0.1
    max_tiles: int | None = 4096
    bootstrap: int = 1000
    device: str = "cpu"
    seed: int = 0


def _question_key(question: str) -> str:
    """Questions that differ only in case, spacing or punctuation spacing (``benign ?``) share a key."""
    return " ".join(split_words(question))


def question_prior_answers(train: list[VqaRecord], test: list[VqaRecord]) -> list[str]:
    """Image-blind baseline answers: the most frequent training answer of the same question.

    Unseen questions fall back to the most frequent training answer of their kind (closed/open). A
    multiple-choice question takes the most frequent of its own choices (by the same-question counts, then
    the kind counts; the first choice when none was ever a training answer).
    """
    by_question: dict[str, Counter[str]] = {}
    by_kind: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    for r in train:
        ans = normalize_answer(r.answer)
        by_question.setdefault(_question_key(r.question), Counter())[ans] += 1
        by_kind[r.closed][ans] += 1
    out = []
    for r in test:
        same = by_question.get(_question_key(r.question), Counter())
        kind = by_kind[r.closed]
        if r.choices:
            options = [normalize_answer(c) for c in r.choices]
            out.append(max(options, key=lambda a: (same[a], kind[a], -options.index(a))))
        elif same:
            out.append(same.most_common(1)[0][0])
        else:
            out.append(kind.most_common(1)[0][0] if kind else "")
    return out


def _breakdown(
    records: list[VqaRecord], correct: np.ndarray, baseline: np.ndarray
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    closed = np.array([r.closed for r in records])
    for name, sel in (("closed", closed), ("open", ~closed), ("overall", np.ones_like(closed))):
        n = int(sel.sum())
        out[name] = {
            "n": n,
            "correct": int(correct[sel].sum()),
            "accuracy": float(correct[sel].mean()) if n else None,
            "baseline_accuracy": float(baseline[sel].mean()) if n else None,
        }
    return out


@register_protocol
class VqaFusionProtocol(Protocol):
    """Closed and open VQA by answer classification on frozen features (see the module docstring)."""

    name = "vqa.fusion"
    version = 1
    family = "vqa"
    data_kind = VqaTaskData
    Config = VqaConfig
    primary_metric = "overall_accuracy"

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        if self.config.question_encoder not in QUESTION_ENCODERS:
            raise ValueError(
                f"vqa.fusion: question_encoder {self.config.question_encoder!r} unknown; "
                f"use one of {QUESTION_ENCODERS}"
            )

    def _question_encoder(self, train: list[VqaRecord]) -> nn.Module:
        cfg: VqaConfig = self.config
        if cfg.question_encoder == "minilm":
            return FrozenMiniLM(max_len=cfg.question_max_len)
        tok = WordTokenizer.build([r.question for r in train], min_freq=cfg.question_min_freq)
        return TransformerQuestionEncoder(
            tok, cfg.d_model, cfg.question_layers, cfg.n_heads, cfg.dropout, cfg.question_max_len
        )

    def run(self, data: VqaTaskData, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Train on train, select on val, score test; write artifacts under ``out_dir``."""
        cfg: VqaConfig = self.config
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        records, carved = ensure_val_split(data.records, cfg.val_fraction, cfg.seed)
        split = {s: [r for r in records if r.split == s] for s in ("train", "val", "test")}
        counts = Counter(normalize_answer(r.answer) for r in split["train"])
        answers = sorted(a for a, c in counts.items() if c >= cfg.answer_min_freq)
        index = {a: i for i, a in enumerate(answers)}
        train = [r for r in split["train"] if normalize_answer(r.answer) in index]
        if len(answers) < 2:
            raise ValueError(
                f"vqa.fusion: the training answers form {len(answers)} class(es); need at least 2"
            )
        bags = {k: cap_bag(v, cfg.max_tiles, k, cfg.seed) for k, v in data.bags.items()}
        device = torch.device(cfg.device)
        q_encoder = self._question_encoder(train)
        model = VqaFusionModel(
            VqaModelConfig(
                feat_dim=data.dim,
                question_dim=q_encoder.out_dim,
                n_answers=len(answers),
                d_model=cfg.d_model,
                n_memory=cfg.n_memory,
                n_heads=cfg.n_heads,
                n_layers=cfg.n_layers,
                dropout=cfg.dropout,
            ),
            q_encoder,
        ).to(device)
        targets = torch.tensor([index[normalize_answer(r.answer)] for r in train])

        def batch_loss(idx: list[int]) -> torch.Tensor:
            feats, mask = collate_bags([bags[train[i].image_id] for i in idx])
            logits = model(feats.to(device), mask.to(device), [train[i].question for i in idx])
            return nn.functional.cross_entropy(logits, targets[idx].to(device))

        def predict(recs: list[VqaRecord]) -> list[str]:
            preds: list[str] = []
            with torch.no_grad():
                for part in inference_chunks([bags[r.image_id].shape[0] for r in recs], max_items=256):
                    chunk = recs[part]
                    feats, mask = collate_bags([bags[r.image_id] for r in chunk])
                    logits = model(feats.to(device), mask.to(device), [r.question for r in chunk])
                    allowed = [
                        [index[a] for a in map(normalize_answer, r.choices) if a in index] for r in chunk
                    ]
                    preds += [answers[j] for j in restrict_to_choices(logits, allowed).tolist()]
            return preds

        def val_accuracy() -> float:
            preds = predict(split["val"])
            return float(
                np.mean([p == normalize_answer(r.answer) for p, r in zip(preds, split["val"], strict=True)])
            )

        train_cfg = TrainConfig(
            cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience, seed=cfg.seed
        )
        fitted = fit(model, len(train), batch_loss, val_accuracy, train_cfg)

        test = split["test"]
        preds = predict(test)
        truth = [normalize_answer(r.answer) for r in test]
        correct = np.array([p == t for p, t in zip(preds, truth, strict=True)])
        base_preds = question_prior_answers(train, test)
        baseline = np.array([b == t for b, t in zip(base_preds, truth, strict=True)])
        breakdown = _breakdown(test, correct, baseline)
        metrics = {
            "overall_accuracy": breakdown["overall"]["accuracy"],
            "baseline_overall_accuracy": breakdown["overall"]["baseline_accuracy"],
        }
        for kind in ("closed", "open"):
            if breakdown[kind]["n"]:
                metrics[f"{kind}_accuracy"] = breakdown[kind]["accuracy"]
                metrics[f"baseline_{kind}_accuracy"] = breakdown[kind]["baseline_accuracy"]
        open_truth = [t for t, r in zip(truth, test, strict=True) if not r.closed]
        if open_truth:
            metrics["open_oov_fraction"] = float(np.mean([t not in index for t in open_truth]))

        ci95 = _bootstrap_ci(test, correct, cfg)
        write_json_atomic(out_dir / "vqa_breakdown.json", breakdown)
        write_text_atomic(out_dir / "predictions.csv", _predictions_csv(test, preds, base_preds, correct))
        write_json_atomic(out_dir / "curves.json", fitted.curves)
        flags = ["val carved from train"] if carved else []
        if metrics["overall_accuracy"] <= metrics["baseline_overall_accuracy"]:
            flags.append("not above question-prior baseline")
        return self.make_result(
            task=task,
            encoder=encoder,
            metrics=metrics,
            runs=[dict(metrics)],
            ci95=ci95,
            provenance={
                **data.meta,
                **describe(fitted),
                "n_answers": len(answers),
                "n_train": len(train),
                "n_val": len(split["val"]),
                "n_test": len(test),
                "val_metric": "overall_accuracy",
                "seeds": [cfg.seed],
            },
            artifacts={
                "vqa_breakdown": "vqa_breakdown.json",
                "predictions": "predictions.csv",
                "curves": "curves.json",
            },
            flags=flags,
        )


def _bootstrap_ci(
    test: list[VqaRecord], correct: np.ndarray, cfg: VqaConfig
) -> dict[str, tuple[float, float]]:
    """95% percentile CIs of the accuracies over resampled test questions (closed/open keep their sizes)."""
    from gpfm.eval.metrics.bootstrap import resample_weights

    if cfg.bootstrap <= 0 or not len(test):
        return {}
    closed = np.array([r.closed for r in test])
    weights = resample_weights(len(test), cfg.bootstrap, seed=cfg.seed, strata=closed.astype(int))
    out = {}
    for name, sel in (
        ("overall_accuracy", np.ones_like(closed)),
        ("closed_accuracy", closed),
        ("open_accuracy", ~closed),
    ):
        if sel.any():
            acc = weights[:, sel] @ correct[sel].astype(float) / sel.sum()
            low, high = np.percentile(acc, [2.5, 97.5])
            out[name] = (float(low), float(high))
    return out


def _predictions_csv(test: list[VqaRecord], preds: list[str], base: list[str], correct: np.ndarray) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "question", "answer", "prediction", "closed", "correct", "baseline_prediction"])
    for r, p, b, c in zip(test, preds, base, correct, strict=True):
        writer.writerow([r.image_id, r.question, r.answer, p, int(r.closed), int(c), b])
    return buf.getvalue()
