"""report.histgen: decoding mechanics, the protocol on real LC25000 features, loaders and persistence."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gpfm.eval.multimodal.data import ReportTaskData, assign_splits, collate_bags
from gpfm.eval.data.multimodal import load_report_records
from gpfm.eval.multimodal.report_model import ReportGenerator, ReportModelConfig
from gpfm.eval.protocol import TaskContext, create_protocol
from gpfm.eval.families.report_generation import load_report_model
from gpfm.eval.text.readers import TextRecord, read_patchgastric_captions
from gpfm.eval.text.scores import score_texts
from tests.conftest import shared_path
from tests.eval._multimodal_data import CAPTIONS, bags_and_labels, caption_records

# Small, fast settings for test-sized sets (the pinned defaults are for real report corpora).
FAST = dict(
    d_model=64,
    ff_dim=128,
    n_layers=1,
    n_memory=4,
    max_len=24,
    min_freq=1,
    epochs=8,
    patience=3,
    lr=2e-3,
    beam_size=2,
)
KEYWORD = {"adenocarcinoma": "lung_aca", "benign": "lung_n", "normal": "lung_n", "squamous": "lung_scc"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; on a shared 2-core box extra threads only thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@torch.no_grad()
def _sequence_logprob(
    model: ReportGenerator, feats: torch.Tensor, mask: torch.Tensor, ids: list[int], min_len: int
) -> float:
    """Teacher-forced log p(ids + <eos> | bag) under the decoding constraints.

    No pad/bos/unk, no eos before ``min_len``: an independent recomputation of a decoded sequence's score
    from one forward pass.
    """
    cfg = model.cfg
    seq = torch.tensor([[cfg.bos_id, *ids, cfg.eos_id]])
    logits = model(feats, mask, seq[:, :-1]).float()
    logits[..., [cfg.pad_id, cfg.bos_id, cfg.unk_id]] = float("-inf")
    logits[0, :min_len, cfg.eos_id] = float("-inf")
    logp = torch.log_softmax(logits, -1)[0]
    return float(logp[torch.arange(len(ids) + 1), seq[0, 1:]].sum())


def test_greedy_and_beam_scores_match_teacher_forcing() -> None:
    torch.manual_seed(0)
    model = ReportGenerator(
        ReportModelConfig(
            feat_dim=8, vocab_size=12, d_model=32, n_heads=2, n_layers=1, ff_dim=64, n_memory=2, max_len=12
        )
    ).eval()
    feats, mask = collate_bags(
        [np.random.default_rng(i).normal(size=(3 + i, 8)).astype(np.float32) for i in range(3)]
    )
    special = {0, 1, 3}
    for beam in (1, 3):
        gens = model.generate(feats, mask, beam_size=beam, length_penalty=0.0, min_len=2)
        for i, g in enumerate(gens):
            assert not special & set(g.ids) and len(g.ids) >= 2 and 2 not in g.ids
            if g.ended:
                ref = _sequence_logprob(
                    model,
                    feats[i : i + 1, : int(mask[i].sum())],
                    mask[i : i + 1, : int(mask[i].sum())],
                    g.ids,
                    2,
                )
                assert g.logprob == pytest.approx(ref, abs=1e-4)
    # Beam search with alpha = 0 never finds a worse finished sequence than greedy on the same bag.
    greedy = model.generate(feats, mask, beam_size=1, min_len=2)
    beam = model.generate(feats, mask, beam_size=4, length_penalty=0.0, min_len=2)
    for g, b in zip(greedy, beam, strict=True):
        if g.ended and b.ended:
            assert b.logprob >= g.logprob - 1e-4
    # A max_len too short to finish is reported as truncated, never as ended.
    short = model.generate(feats, mask, beam_size=1, max_len=2, min_len=2)
    assert all(not g.ended and len(g.ids) == 1 for g in short)


def test_teacher_forcing_learns_two_bags_exactly() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=(1, 4)).astype(np.float32)]
    targets = [[4, 5, 6], [7, 8]]
    model = ReportGenerator(
        ReportModelConfig(
            feat_dim=4,
            vocab_size=9,
            d_model=32,
            n_heads=2,
            n_layers=1,
            ff_dim=64,
            n_memory=2,
            max_len=8,
            dropout=0.0,
        )
    )
    feats, mask = collate_bags(bags)
    tokens = torch.tensor([[1, 4, 5, 6, 2], [1, 7, 8, 2, 0]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model.loss(feats, mask, tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for beam in (1, 3):
        assert [g.ids for g in model.generate(feats, mask, beam_size=beam)] == targets


@pytest.mark.realdata
def test_report_protocol_on_real_lc25000_features(lc25000_features, tmp_path: Path) -> None:
    bags, items = bags_and_labels(lc25000_features)
    data = ReportTaskData(bags, caption_records(items), meta={"encoder": "efficientnet-lite0-imagenet"})
    result = create_protocol("report.histgen", **FAST).run(
        data, tmp_path, task="lc25000-captions", encoder="efficientnet-lite0-imagenet"
    )
    m = result.metrics
    print(
        json.dumps(
            {
                "report_metrics": m,
                "train_seconds": result.provenance["train_seconds"],
                "best_epoch": result.provenance["best_epoch"],
            }
        )
    )
    assert (
        result.primary_metric == "BLEU_4"
        and result.protocol == "report.histgen"
        and result.protocol_version == 1
    )
    low, high = result.ci95["BLEU_4"]
    assert low <= m["BLEU_4"] <= high and high - low < 0.2

    samples = json.loads((tmp_path / result.artifacts["samples"]).read_text())
    test_ids = {r.id for r in data.records if r.split == "test"}
    assert {s["id"] for s in samples} == test_ids and len(samples) == result.provenance["n_test"]
    # Valid text: non-empty, ended by <eos>, ends with a period, no special tokens.
    for s in samples:
        assert s["generated"] and s["ended"] and s["generated"].endswith(".") and "<" not in s["generated"]
    # Corpus metrics recomputed independently from the saved samples.
    again = score_texts([s["generated"] for s in samples], [[s["reference"]] for s in samples])
    assert again.corpus["BLEU_4"] == pytest.approx(m["BLEU_4"]) and again.corpus["CIDEr"] == pytest.approx(
        m["CIDEr"]
    )

    # Baselines computed here, not by the protocol: most frequent training caption, majority class.
    train_caps = [r.text for r in data.records if r.split == "train"]
    constant = max(set(train_caps), key=lambda t: (train_caps.count(t), -train_caps.index(t)))
    base = score_texts([constant] * len(samples), [[s["reference"]] for s in samples]).corpus
    assert m["baseline_BLEU_4"] == pytest.approx(base["BLEU_4"])
    assert (
        m["BLEU_4"] > base["BLEU_4"] + 0.2
        and m["CIDEr"] > 2 * base["CIDEr"]
        and m["ROUGE_L"] > base["ROUGE_L"] + 0.2
    )
    label_of = {sha: lab for sha, lab, _ in items}
    said = [next((KEYWORD[w] for w in s["generated"].split() if w in KEYWORD), None) for s in samples]
    class_acc = np.mean([p == label_of[s["id"]] for p, s in zip(said, samples, strict=True)])
    majority = max(np.mean([label_of[s["id"]] == c for s in samples]) for c in CAPTIONS)
    print(json.dumps({"caption_class_accuracy": class_acc, "majority_class": majority}))
    assert class_acc > 0.8 and class_acc > majority + 0.4

    with open(tmp_path / result.artifacts["samples_csv"], newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(samples)
    # The saved model + tokenizer reproduce the protocol's beam output.
    model, tok = load_report_model(tmp_path)
    first = samples[0]
    feats, mask = collate_bags([bags[first["id"]]])
    gen = model.generate(feats, mask, beam_size=FAST["beam_size"], length_penalty=0.6)[0]
    assert tok.decode(gen.ids) == first["generated"]


def test_report_records_loader_csv_npz_and_histgen(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(6)]
    np.savez(tmp_path / "enc-a.npz", ids=np.array(ids), features=rng.normal(size=(6, 5)).astype(np.float32))
    (tmp_path / "reports.csv").write_text(
        "id,text,split\n"
        + "".join(f"{i},report {i}.,{'train' if n < 4 else 'test'}\n" for n, i in enumerate(ids))
    )
    ctx = TaskContext(encoder="enc-a", base_dir=tmp_path, cache_dir=tmp_path / "cache")
    data = load_report_records(
        {
            "kind": "report_records",
            "format": "csv",
            "records_file": "reports.csv",
            "features_file": "{encoder}.npz",
        },
        ctx,
    )
    assert data.dim == 5 and [r.split for r in data.records] == ["train"] * 4 + ["test"] * 2
    assert data.meta["split_counts"] == {"train": 4, "val": 0, "test": 2}

    # HistGen JSON + slide HDF5 bags (gpfm.eval.data.bags layout), ids with prefix matching (patient → slides).
    import h5py

    (tmp_path / "slides").mkdir()
    for name, n in (("TCGA-AA-0001-01Z-DX1", 3), ("TCGA-AA-0001-01Z-DX2", 2), ("TCGA-AA-0002-01Z-DX1", 4)):
        with h5py.File(tmp_path / "slides" / f"{name}.h5", "w") as fh:
            fh["features"] = rng.normal(size=(n, 5)).astype(np.float32)
            fh["coords"] = np.zeros((n, 2), np.int64)
    (tmp_path / "ann.json").write_text(
        json.dumps(
            {
                "train": [{"id": "TCGA-AA-0001", "report": "Invasive carcinoma."}],
                "test": [{"id": "TCGA-AA-0002", "report": "Benign tissue."}],
            }
        )
    )
    data = load_report_records(
        {"format": "histgen", "records_file": "ann.json", "features_dir": "slides", "match": "prefix"}, ctx
    )
    assert data.bags["TCGA-AA-0001"].shape == (5, 5) and data.bags["TCGA-AA-0002"].shape == (4, 5)

    with pytest.raises(ValueError, match=r"1 of 2 record ids have no features .*TCGA-AA-0002"):
        (tmp_path / "slides" / "TCGA-AA-0002-01Z-DX1.h5").unlink()
        load_report_records(
            {"format": "histgen", "records_file": "ann.json", "features_dir": "slides", "match": "prefix"},
            ctx,
        )
    # ARCH books figures are bags of their images; a features file with repeated ids holds multi-tile bags.
    books = {
        "0": {"figure_id": "00", "letter": "A", "caption": " Two panels.", "uuid": "u1"},
        "1": {"figure_id": "00", "letter": "B", "caption": " Two panels.", "uuid": "u2"},
        "2": {"figure_id": "01", "letter": "Single", "caption": " One panel.", "uuid": "u3"},
    }
    (tmp_path / "books.json").write_text(json.dumps(books))
    np.savez(
        tmp_path / "arch.npz",
        ids=np.array(["u1", "u2", "u3", "u3"]),
        features=rng.normal(size=(4, 5)).astype(np.float32),
    )
    data = load_report_records(
        {
            "format": "arch",
            "records_file": "books.json",
            "features_file": "arch.npz",
            "split_fractions": {"train": 0.5, "test": 0.5},
        },
        ctx,
    )
    assert data.bags["00"].shape == (2, 5) and data.bags["01"].shape == (2, 5)
    assert {r.split for r in data.records} <= {"train", "test"}
    with pytest.raises(ValueError, match="unknown key"):
        load_report_records(
            {"format": "csv", "records_file": "reports.csv", "features_file": "x.npz", "typo": 1}, ctx
        )
    with pytest.raises(ValueError, match="no split"):
        (tmp_path / "nosplit.csv").write_text("id,text\ns0,a.\n")
        load_report_records(
            {"format": "csv", "records_file": "nosplit.csv", "features_file": "{encoder}.npz"}, ctx
        )


def test_protocol_refuses_unknown_option_and_missing_test_split() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        create_protocol("report.histgen", beam=3)
    data = ReportTaskData({"a": np.ones((1, 3), np.float32)}, [TextRecord("a", "x.", "train")])
    with pytest.raises(ValueError, match="never select on test"):
        create_protocol("report.histgen", **FAST).run(data, Path("/tmp/unused"), task="t", encoder="e")


def test_images_root_refuses_ambiguous_record_ids(tmp_path: Path) -> None:
    from PIL import Image

    for sub in ("train", "test"):
        (tmp_path / "img" / sub).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / sub / "x.png")
    (tmp_path / "r.csv").write_text("id,text,split\nx,a caption.,train\n")
    ctx = TaskContext(encoder="efficientnet-lite0-imagenet", base_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(
        ValueError, match=r"record id 'x' matches several images \['test/x.png', 'train/x.png'\]"
    ):
        load_report_records({"format": "csv", "records_file": "r.csv", "images_root": "img"}, ctx)


GRADE_WORDS = ("well", "moderately", "poorly", "papillary", "signet", "mucinous")


def _grade_words(text: str) -> frozenset[str]:
    return frozenset(g for g in GRADE_WORDS if re.search(rf"\b{g}\b", text.lower()))


@pytest.mark.realdata
@pytest.mark.slow
def test_report_protocol_on_real_patchgastric_captions(tmp_path: Path) -> None:
    """The 991 real PatchGastricADC22 captions with stand-in features (the patches are not in shared data).

    Each slide's feature is its subtype's fixed random vector plus noise, so the features carry exactly the
    subtype. The model must write real-vocabulary captions whose diagnosis names the right grade
    (well/moderately/poorly/papillary/signet/mucinous), far more often than the majority subtype.
    """
    recs = read_patchgastric_captions(shared_path("text", "patchgastric_adc22", "captions.csv"))
    rng = np.random.default_rng(0)
    centre = {s: rng.normal(size=16) for s in sorted({r.meta["subtype"] for r in recs})}
    bags = {
        r.id: (centre[r.meta["subtype"]] + 0.3 * rng.normal(size=16))[None].astype(np.float32) for r in recs
    }
    data = ReportTaskData(bags, assign_splits(recs, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0))
    options = {**FAST, "max_len": 64, "min_freq": 2}
    result = create_protocol("report.histgen", **options).run(data, tmp_path, task="pg", encoder="stand-in")
    samples = json.loads((tmp_path / "samples.json").read_text())
    subtype = {r.id: r.meta["subtype"] for r in recs}
    grade_acc = np.mean([_grade_words(s["generated"]) == _grade_words(subtype[s["id"]]) for s in samples])
    train_grades = Counter(_grade_words(r.meta["subtype"]) for r in data.records if r.split == "train")
    majority = train_grades.most_common(1)[0][0]
    majority_acc = np.mean([_grade_words(subtype[s["id"]]) == majority for s in samples])
    print(
        json.dumps(
            {
                "patchgastric": result.metrics,
                "grade_accuracy": grade_acc,
                "majority": majority_acc,
                "train_seconds": result.provenance["train_seconds"],
                "vocab": result.provenance["vocab_size"],
            }
        )
    )
    assert grade_acc > majority_acc + 0.3
    assert all(s["generated"] and s["ended"] and "<" not in s["generated"] for s in samples)
    assert result.provenance["vocab_size"] > 100  # a real clinical vocabulary, built from train only
