"""``report.histgen`` v1: report/caption generation from frozen tile features.

Pipeline: word tokenizer built from the *training* texts (frequency cut-off ``min_freq``) → bag of tile
features attention-pooled into ``n_memory`` memory tokens → ``n_layers``-layer transformer decoder trained
with teacher forcing (AdamW, warmup + cosine, early stopping on **val BLEU-4** of greedy decodes, as HistGen
monitors ``BLEU_4``; ties broken by val BLEU-1) → beam-search decoding of the test split → BLEU-1…4,
ROUGE-L (β = 1.2, pycocoevalcap), CIDEr-D on punctuation-free lower-cased words. **Primary metric:
BLEU-4** (HistGen's selection metric); ``mean6`` (mean of the six, CIDEr/10) is reported beside
it. METEOR is not computed (needs WordNet or Java; see :mod:`gpfm.eval.text.scores`).

95% CIs: percentile bootstrap over test samples (``bootstrap`` = 1,000 resamples, seed = ``seed``) of
BLEU-1…4 and ROUGE-L. Also reported: ``baseline_BLEU_4``/``baseline_CIDEr`` of a constant prediction (the
most frequent training text; ties → first seen), and ``truncated_fraction`` (test outputs that hit
``max_len`` without ``<eos>``).

Artifacts: ``samples`` (JSON list of ``{"id", "reference", "generated", "ended", per-sample scores}``) and
``samples.csv``; ``curves``; ``model.safetensors`` + ``model.json`` (architecture and the tokenizer's full
vocabulary, so the model can be reloaded with :func:`load_report_model`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpfm.atomic import write_json_atomic, write_text_atomic
from gpfm.eval.data.multimodal import load_report_records
from gpfm.eval.family import Family, register_family
from gpfm.eval.multimodal.data import (
    ReportTaskData,
    cap_bag,
    collate_bags,
    ensure_val_split,
    inference_chunks,
)
from gpfm.eval.multimodal.report_model import ReportGenerator, ReportModelConfig
from gpfm.eval.multimodal.training import TrainConfig, describe, fit
from gpfm.eval.protocol import Protocol, ProtocolResult, register_protocol, register_task_loader
from gpfm.eval.text.bleu import bleu_from_stats, bleu_stats, corpus_bleu
from gpfm.eval.text.readers import TextRecord
from gpfm.eval.text.scores import score_texts
from gpfm.eval.text.tokenizer import WordTokenizer, metric_tokens

register_family(Family(
    "report_generation", "write pathology reports or captions from slide features"))
register_task_loader("report_records")(load_report_records)


@dataclass
class ReportGenerationConfig:
    """Pinned defaults of ``report.histgen`` v1."""

    d_model: int = 256
    n_memory: int = 8
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 512
    dropout: float = 0.1
    max_len: int = 128
    min_freq: int = 3
    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-2
    patience: int = 6
    beam_size: int = 3
    length_penalty: float = 0.6
    val_fraction: float = 0.1
    max_tiles: int | None = 4096
    rouge_beta: float = 1.2
    bootstrap: int = 1000
    device: str = "cpu"
    seed: int = 0


def _decode(
    model: ReportGenerator, tok: WordTokenizer, bags: list[np.ndarray], cfg: ReportGenerationConfig, beam: int
) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    device = next(model.parameters()).device
    for chunk in inference_chunks([b.shape[0] for b in bags], max_items=64):
        feats, mask = collate_bags(bags[chunk])
        gens = model.generate(
            feats.to(device),
            mask.to(device),
            max_len=cfg.max_len,
            beam_size=beam,
            length_penalty=cfg.length_penalty,
        )
        out.extend((tok.decode(g.ids), g.ended) for g in gens)
    return out


def _constant_baseline(train_texts: list[str], test_refs: list[list[str]]) -> dict[str, float]:
    counts = Counter(train_texts)
    constant = max(counts, key=counts.__getitem__)  # ties: first seen (Counter keeps insertion order)
    scores = score_texts([constant] * len(test_refs), test_refs)
    return {"baseline_BLEU_4": scores.corpus["BLEU_4"], "baseline_CIDEr": scores.corpus["CIDEr"]}


def _bootstrap_ci(
    hyps: list[list[str]],
    refs: list[list[list[str]]],
    per_sample: list[dict[str, float]],
    cfg: ReportGenerationConfig,
) -> dict[str, tuple[float, float]]:
    """95% percentile CIs of corpus BLEU-1…4 and ROUGE-L over resampled test samples.

    CIDEr gets none: its idf depends on the whole corpus, so per-sample scores do not resample.
    """
    from gpfm.eval.metrics.bootstrap import resample_weights

    if cfg.bootstrap <= 0:
        return {}
    weights = resample_weights(len(hyps), cfg.bootstrap, seed=cfg.seed)
    summed = weights @ bleu_stats(hyps, refs)
    out = {}
    for k in range(1, 5):
        low, high = np.percentile(bleu_from_stats(summed, k), [2.5, 97.5])
        out[f"BLEU_{k}"] = (float(low), float(high))
    rouge = weights @ np.array([s["ROUGE_L"] for s in per_sample]) / len(hyps)
    low, high = np.percentile(rouge, [2.5, 97.5])
    out["ROUGE_L"] = (float(low), float(high))
    return out


def _samples_csv(samples: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(samples[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(samples)
    return buf.getvalue()


def load_report_model(folder: str | Path) -> tuple[ReportGenerator, WordTokenizer]:
    """Reload a model and tokenizer saved by ``report.histgen`` (``model.json`` + ``model.safetensors``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    spec = json.loads((folder / "model.json").read_text())
    tok = WordTokenizer.from_dict(spec["tokenizer"], source=str(folder / "model.json"))
    model = ReportGenerator(ReportModelConfig(**spec["model"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), tok


@register_protocol
class ReportGenerationProtocol(Protocol):
    """HistGen-style report generation on frozen features (see the module docstring)."""

    name = "report.histgen"
    version = 1
    family = "report_generation"
    data_kind = ReportTaskData
    Config = ReportGenerationConfig
    primary_metric = "BLEU_4"

    def run(self, data: ReportTaskData, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Train on train, select on val, decode and score test; write artifacts under ``out_dir``."""
        cfg: ReportGenerationConfig = self.config
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        records, carved = ensure_val_split(data.records, cfg.val_fraction, cfg.seed)
        by_split: dict[str, list[TextRecord]] = {
            s: [r for r in records if r.split == s] for s in ("train", "val", "test")
        }
        tok = WordTokenizer.build([r.text for r in by_split["train"]], min_freq=cfg.min_freq)
        bags = {k: cap_bag(v, cfg.max_tiles, k, cfg.seed) for k, v in data.bags.items()}
        train_bags = [bags[r.id] for r in by_split["train"]]
        train_ids = [
            tok.encode(r.text, add_bos=True, add_eos=True, max_len=cfg.max_len) for r in by_split["train"]
        ]

        device = torch.device(cfg.device)
        model = ReportGenerator(
            ReportModelConfig(
                feat_dim=data.dim,
                vocab_size=len(tok),
                d_model=cfg.d_model,
                n_memory=cfg.n_memory,
                n_heads=cfg.n_heads,
                n_layers=cfg.n_layers,
                ff_dim=cfg.ff_dim,
                dropout=cfg.dropout,
                max_len=cfg.max_len,
            )
        ).to(device)

        def batch_loss(idx: list[int]) -> torch.Tensor:
            feats, mask = collate_bags([train_bags[i] for i in idx])
            longest = max(len(train_ids[i]) for i in idx)
            tokens = torch.full((len(idx), longest), tok.pad_id, dtype=torch.long)
            for row, i in enumerate(idx):
                tokens[row, : len(train_ids[i])] = torch.tensor(train_ids[i])
            return model.loss(feats.to(device), mask.to(device), tokens.to(device))

        val_bags = [bags[r.id] for r in by_split["val"]]
        val_refs = [[metric_tokens(r.text)] for r in by_split["val"]]

        def val_bleu4() -> tuple[float, float]:
            gens = _decode(model, tok, val_bags, cfg, beam=1)
            bleu = corpus_bleu([metric_tokens(g) for g, _ in gens], val_refs)
            return bleu["BLEU_4"], bleu["BLEU_1"]  # BLEU-1 breaks ties (e.g. all-zero BLEU-4 early on)

        train_cfg = TrainConfig(
            cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience, seed=cfg.seed
        )
        fitted = fit(model, len(train_ids), batch_loss, val_bleu4, train_cfg)

        test = by_split["test"]
        gens = _decode(model, tok, [bags[r.id] for r in test], cfg, beam=cfg.beam_size)
        refs = [[r.text] for r in test]
        scores = score_texts([g for g, _ in gens], refs, rouge_beta=cfg.rouge_beta)
        metrics = dict(scores.corpus)
        metrics["truncated_fraction"] = float(np.mean([not ended for _, ended in gens]))
        metrics.update(_constant_baseline([r.text for r in by_split["train"]], refs))
        ci95 = _bootstrap_ci(
            [metric_tokens(g) for g, _ in gens],
            [[metric_tokens(r.text)] for r in test],
            scores.per_sample,
            cfg,
        )

        samples = [
            {
                "id": r.id,
                "reference": r.text,
                "generated": g,
                "ended": ended,
                **{k: round(v, 6) for k, v in s.items()},
            }
            for r, (g, ended), s in zip(test, gens, scores.per_sample, strict=True)
        ]
        write_json_atomic(out_dir / "samples.json", samples)
        write_text_atomic(out_dir / "samples.csv", _samples_csv(samples))
        write_json_atomic(out_dir / "curves.json", fitted.curves)
        self._save_model(model, tok, out_dir)

        flags = ["val carved from train"] if carved else []
        if metrics["BLEU_4"] <= metrics["baseline_BLEU_4"]:
            flags.append("not above constant-text baseline")
        if metrics["truncated_fraction"] > 0:
            flags.append(f"{metrics['truncated_fraction']:.0%} of outputs truncated at max_len")
        return self.make_result(
            task=task,
            encoder=encoder,
            metrics=metrics,
            runs=[dict(metrics)],
            ci95=ci95,
            provenance={
                **data.meta,
                **describe(fitted),
                "vocab_size": len(tok),
                "n_train": len(by_split["train"]),
                "n_val": len(by_split["val"]),
                "n_test": len(test),
                "val_metric": "BLEU_4 (greedy; ties by BLEU_1)",
                "seeds": [cfg.seed],
            },
            artifacts={
                "samples": "samples.json",
                "samples_csv": "samples.csv",
                "curves": "curves.json",
                "model": "model.safetensors",
                "model_spec": "model.json",
            },
            flags=flags,
        )

    @staticmethod
    def _save_model(model: ReportGenerator, tok: WordTokenizer, out_dir: Path) -> None:
        from gpfm.models.checkpoints import save_safetensors_atomic

        save_safetensors_atomic(
            {k: v.detach().cpu() for k, v in model.state_dict().items()}, out_dir / "model.safetensors"
        )
        write_json_atomic(
            out_dir / "model.json", {"model": dataclasses.asdict(model.cfg), "tokenizer": tok.to_dict()}
        )
