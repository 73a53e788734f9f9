"""MIL on bags of REAL LC25000 tile features (EfficientNet-Lite0): positive iff a bag holds a tumour tile.

Bags hold 10–30 benign (``lung_n``) tiles; positive bags get 1–3 tumour tiles (``lung_aca``/``lung_scc``) at
random positions. Train and test bags draw from disjoint halves of the tiles, split by sha256 (LC25000's
near-duplicates from augmentation can still straddle the halves, so absolute numbers are optimistic; the
test is about learning the MIL rule and where the attention goes).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from gpfm.eval.data.bags import BagDataset
from gpfm.eval.data.folds import FoldSplit
from gpfm.eval.protocol import ProtocolResult, create_protocol

pytestmark = pytest.mark.realdata


def _bags(features: dict, seed: int = 0) -> tuple[BagDataset, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    names = list(features["label_names"])
    benign = names.index("lung_n")
    labels = features["labels"]
    _, group = np.unique(features["sha256"], return_inverse=True)  # sha256 groups: one side only
    groups_test = set(rng.permutation(group.max() + 1)[: (group.max() + 1) // 2].tolist())
    is_test = np.array([g in groups_test for g in group])
    x = torch.from_numpy(features["features"])
    bags, ys, ids, tumour_pos, side = [], [], [], [], []
    for part, n_bags in (("train", 80), ("test", 60)):
        pool = is_test if part == "test" else ~is_test
        benign_idx = np.flatnonzero(pool & (labels == benign))
        tumour_idx = np.flatnonzero(pool & (labels != benign))
        for b in range(n_bags):
            y = b % 2
            tiles = rng.choice(benign_idx, int(rng.integers(10, 31)), replace=False)
            pos = np.array([], dtype=int)
            if y:
                k = int(rng.integers(1, 4))
                pos = np.sort(rng.choice(len(tiles) + k, k, replace=False))
                order = np.delete(np.arange(len(tiles) + k), pos)
                full = np.empty(len(tiles) + k, dtype=int)
                full[order] = tiles
                full[pos] = rng.choice(tumour_idx, k, replace=False)
                tiles = full
            bags.append(x[tiles])
            ys.append(y)
            ids.append(f"{part}{b:03d}")
            tumour_pos.append(pos)
            side.append(part)
    side_arr = np.array(side)
    train_rows = np.flatnonzero(side_arr == "train")
    fold = FoldSplit("lc25000", train_rows[:60], train_rows[60:], np.flatnonzero(side_arr == "test"))
    coords = [np.stack([np.arange(len(b)), np.zeros(len(b))], 1).astype(np.int64) for b in bags]
    data = BagDataset(bags, np.array(ys), ids, coords, ["no tumour", "tumour"], folds=[fold])
    return data, tumour_pos


FAST = {"max_epochs": 12, "min_epochs": 3, "patience": 4, "num_threads": 1, "device": "cpu"}


def _top1_tumour_rate(result: ProtocolResult, out: Path, data: BagDataset, tumour_pos: list[np.ndarray]):
    hits, chance = [], []
    with h5py.File(out / result.artifacts["attention"], "r") as fh:
        for i in data.folds[0].test:
            if data.labels[i] == 1:
                attn = fh[data.ids[i]][()]
                assert attn.shape == (data.bags[i].shape[0],)  # row-aligned with the bag
                hits.append(int(np.argmax(attn)) in set(tumour_pos[i].tolist()))
                chance.append(len(tumour_pos[i]) / len(attn))
    return float(np.mean(hits)), float(np.mean(chance))


def test_abmil_gpfm_learns_the_mil_rule_and_attends_to_tumour(lc25000_features, tmp_path: Path) -> None:
    data, tumour_pos = _bags(lc25000_features)
    result = create_protocol("wsi.abmil.gpfm", **FAST).run(
        data, tmp_path, task="lc25000-mil", encoder="effnet"
    )
    auroc = result.metrics["macro_auroc"]
    top1, chance = _top1_tumour_rate(result, tmp_path, data, tumour_pos)
    print(
        f"wsi.abmil.gpfm: test AUROC {auroc:.3f}, bal.acc {result.metrics['balanced_accuracy']:.3f}; "
        f"top-attended tile is tumour in {top1:.2f} of positive bags (chance {chance:.3f})"
    )
    assert auroc >= 0.9
    assert result.ci95["macro_auroc"][0] > 0.75
    assert top1 >= 0.7 and top1 >= 4 * chance
    for kind in ("predictions", "roc_curves", "confusion_matrix", "curves", "attention", "attention_coords"):
        assert (tmp_path / result.artifacts[kind]).is_file()
    curves = json.loads((tmp_path / result.artifacts["curves"]).read_text())
    assert curves["best_epoch"] == result.runs[0]["best_epoch"] and curves["monitor"] == "error"
    # the trained model is saved and, reloaded, gives the very attention the protocol recorded (heatmaps of any
    # slide then use the same model)
    from gpfm.eval.mil.common import apply_model, load_model

    fold = data.folds[0]
    model, record = load_model(tmp_path / f"model_{fold.name}.pt")
    assert record["encoder"] == "effnet" and record["kind"] == "classification" and record["in_dim"] == data.dim
    i = int(fold.test[0])
    attention, _ = apply_model(model, data.bags[i].numpy())
    with h5py.File(tmp_path / result.artifacts["attention"]) as fh:
        assert np.allclose(attention, fh[data.ids[i]][:], atol=1e-5)
    assert len(curves["train_loss"]) == result.runs[0]["epochs_run"]


@pytest.mark.parametrize(
    "name,options,min_auroc",
    [
        ("wsi.abmil.gated", {}, 0.9),
        ("wsi.meanpool", {}, 0.8),
        ("wsi.linear.pooled", {}, 0.8),
        ("wsi.maxpool", {}, 0.8),
        (
            "wsi.transmil",
            {"aggregator_options": {"dim": 128, "heads": 4, "landmarks": 64, "dropout": 0.1}},
            0.8,
        ),
    ],
)
def test_other_aggregators_beat_chance(
    lc25000_features, tmp_path: Path, name: str, options: dict, min_auroc: float
) -> None:
    data, tumour_pos = _bags(lc25000_features)
    if name == "wsi.linear.pooled":  # no training loop, no attention
        result = create_protocol(name).run(data, tmp_path, task="lc25000-mil", encoder="effnet")
        print(f"{name}: test AUROC {result.metrics['macro_auroc']:.3f}")
        assert result.metrics["macro_auroc"] >= min_auroc and "attention" not in result.artifacts
        return
    result = create_protocol(name, **FAST, **options).run(
        data, tmp_path, task="lc25000-mil", encoder="effnet"
    )
    top1, chance = _top1_tumour_rate(result, tmp_path, data, tumour_pos)
    print(
        f"{name}: test AUROC {result.metrics['macro_auroc']:.3f}; top-1 instance tumour {top1:.2f} "
        f"(chance {chance:.3f})"
    )
    assert result.metrics["macro_auroc"] >= min_auroc
