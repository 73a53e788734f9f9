"""Bags from TRIDENT-layout HDF5 files: reading, tile sampling, case bags, splits and the task loaders."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from gpfm.eval.data.bags import BagDataset, H5Bags, check_event_rate, load_slide_task, load_survival_task, read_bag
from gpfm.eval.data.folds import FoldSplit, make_folds, split_hash
from gpfm.eval.protocol import TASK_LOADERS, TaskContext

D = 8


def _write_h5(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, D)).astype(np.float32)
    coords = np.stack([np.arange(n) * 256, np.arange(n) * 512], 1).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", data=feats)
        fh.create_dataset("coords", data=coords)
    return feats, coords


@pytest.fixture()
def slide_task(tmp_path: Path) -> dict:
    """6 cases × 1–2 slides, features for encoder 'toy', a label CSV with split columns."""
    rows, truth = [], {}
    for c in range(6):
        for s in range(1 + c % 2):
            slide = f"case{c}-slide{s}.svs"
            truth[slide] = _write_h5(
                tmp_path / "features_toy" / f"case{c}-slide{s}.h5", 5 + 3 * c + s, 10 * c + s
            )
            rows.append(
                {
                    "case_id": f"case{c}",
                    "slide_id": slide,
                    "label": "normal" if c in (0, 1, 5) else "tumour",  # both classes in every split
                    "split": ["train", "train", "train", "val", "test", "test"][c],
                    "fold": c % 3,
                }
            )
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    ctx = TaskContext(encoder="toy", base_dir=tmp_path, cache_dir=tmp_path / "cache")
    return {"ctx": ctx, "truth": truth, "rows": rows, "dir": tmp_path}


def test_read_bag_full_and_sampled(tmp_path: Path) -> None:
    feats, coords = _write_h5(tmp_path / "s.h5", 50, 0)
    x, c = read_bag(tmp_path / "s.h5")
    np.testing.assert_array_equal(x.numpy(), feats)
    np.testing.assert_array_equal(c, coords)
    xs, cs = read_bag(tmp_path / "s.h5", max_tiles=10, seed=3)
    assert xs.shape == (10, D)
    rows = cs[:, 0] // 256  # coords encode the row, so alignment is checkable
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(xs.numpy(), feats[rows])
    again, _ = read_bag(tmp_path / "s.h5", max_tiles=10, seed=3)
    other, _ = read_bag(tmp_path / "s.h5", max_tiles=10, seed=4)
    assert torch.equal(xs, again) and not torch.equal(xs, other)


def test_read_bag_errors(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "bad.h5", "w") as fh:
        fh.create_dataset("coords", data=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no 'features'"):
        read_bag(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as fh:
        fh.create_dataset("features", data=np.zeros((0, D), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one"):
        read_bag(tmp_path / "empty.h5")


def test_slide_h5_loader_slide_level_fixed_split(slide_task: dict) -> None:
    loader = TASK_LOADERS.get("slide_h5")
    spec = {"labels": "labels.csv", "features": "features_{encoder}", "split_column": "split"}
    data = loader(spec, slide_task["ctx"])
    assert isinstance(data, BagDataset) and len(data) == 9 and data.label_names == ["normal", "tumour"]
    for i, slide in enumerate(data.ids):
        feats, coords = slide_task["truth"][slide]
        np.testing.assert_array_equal(data.bags[i].numpy(), feats)  # 'x.svs' resolved to 'x.h5'
        np.testing.assert_array_equal(data.coords[i], coords)
    assert data.labels.tolist() == [0 if r["label"] == "normal" else 1 for r in slide_task["rows"]]
    fold = data.folds[0]
    assert [len(fold.train), len(fold.val), len(fold.test)] == [4, 2, 3]  # slides of cases 0-2 | 3 | 4-5
    assert data.meta["labels_sha256"] and data.meta["level"] == "slide"


def test_slide_h5_loader_case_level_concatenates(slide_task: dict) -> None:
    spec = {
        "labels": "labels.csv",
        "features": str(slide_task["dir"] / "features_{encoder}"),
        "level": "case",
        "fold_column": "fold",
        "val_fold": "next",
    }
    data = load_slide_task(spec, slide_task["ctx"])
    assert data.ids == [f"case{c}" for c in range(6)]
    i = data.ids.index("case1")
    parts = [slide_task["truth"][f"case1-slide{s}.svs"] for s in range(2)]
    np.testing.assert_array_equal(data.bags[i].numpy(), np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(data.coords[i], np.concatenate([p[1] for p in parts]))
    assert data.members[i] == ["case1-slide0", "case1-slide1"]
    assert data.member_sizes[i] == [len(p[0]) for p in parts]
    assert len(data.folds) == 3
    for k, fold in enumerate(data.folds):  # test on fold k, validate on fold k+1: never val == test
        assert {data.ids[j] for j in fold.test} == {f"case{c}" for c in range(6) if c % 3 == k}
        assert {data.ids[j] for j in fold.val} == {f"case{c}" for c in range(6) if c % 3 == (k + 1) % 3}
        assert not set(fold.val) & set(fold.test) and not set(fold.train) & set(fold.test)
    carved = load_slide_task({**spec, "val_fold": "carve"}, slide_task["ctx"])  # the default: val from train
    assert all(len(f.val) == 0 and len(f.train) == 4 for f in carved.folds)
    with pytest.raises(ValueError, match="unknown key"):
        load_slide_task({**spec, "split": "x"}, slide_task["ctx"])


def test_slide_h5_loader_tile_cap_and_missing(slide_task: dict) -> None:
    spec = {"labels": "labels.csv", "features": "features_toy", "max_tiles": 6, "tile_seed": 1}
    data = load_slide_task(spec, slide_task["ctx"])
    assert max(b.shape[0] for b in data.bags) == 6 and data.folds is None
    (slide_task["dir"] / "features_toy" / "case5-slide1.h5").unlink()
    with pytest.raises(FileNotFoundError, match="case5-slide1"):
        load_slide_task(spec, slide_task["ctx"])
    data = load_slide_task({**spec, "missing": "skip"}, slide_task["ctx"])
    assert len(data) == 8 and data.meta["n_missing"] == 1


def test_slide_without_tissue_follows_the_missing_policy(slide_task: dict) -> None:
    """A slide where tissue detection found nothing has a complete, empty feature file: never a crash mid-task."""
    spec = {"labels": "labels.csv", "features": "features_toy"}
    with h5py.File(slide_task["dir"] / "features_toy" / "case4-slide0.h5", "w") as fh:
        fh.create_dataset("features", data=np.zeros((0, D), np.float32))
        fh.create_dataset("coords", data=np.zeros((0, 2), np.int64))
    with pytest.raises(ValueError, match=r"1 slide\(s\) of labels.csv have no tissue tiles .*case4-slide0.*missing: skip"):
        load_slide_task(spec, slide_task["ctx"])
    data = load_slide_task({**spec, "missing": "skip"}, slide_task["ctx"])
    assert len(data) == 8 and data.meta["n_empty"] == 1 and data.meta["n_missing"] == 0
    assert "case4-slide0.svs" not in data.ids


def test_slide_h5_loader_refuses_leaks_and_bad_labels(slide_task: dict) -> None:
    table = pd.DataFrame(slide_task["rows"])
    table.loc[table.slide_id == "case1-slide1.svs", "split"] = "test"  # case1 on both sides
    table.to_csv(slide_task["dir"] / "leak.csv", index=False)
    with pytest.raises(ValueError, match="case1"):
        load_slide_task(
            {"labels": "leak.csv", "features": "features_toy", "split_column": "split"}, slide_task["ctx"]
        )
    with pytest.raises(ValueError, match="not in label_names"):
        load_slide_task(
            {"labels": "labels.csv", "features": "features_toy", "label_names": ["normal"]}, slide_task["ctx"]
        )
    with pytest.raises(FileNotFoundError, match="features folder"):
        load_slide_task({"labels": "labels.csv", "features": "nowhere_{encoder}"}, slide_task["ctx"])


def test_make_folds_are_case_grouped_stratified_and_disjoint() -> None:
    rng = np.random.default_rng(0)
    cases = [f"c{i // 2}" for i in range(200)]  # two bags per case
    labels = np.array([int(c[1:]) % 3 for c in cases])
    folds = make_folds(labels, cases, n_folds=5, val_fraction=0.125, seed=0)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(200))  # every bag tested exactly once
    for fold in folds:
        fold.check(cases)
        assert len(fold.val) > 0
        assert abs(len(fold.test) / 200 - 0.2) < 0.05 and abs(len(fold.val) / 200 - 0.1) < 0.05
        assert set(np.bincount(labels[fold.test], minlength=3)) != {0}
    assert split_hash(folds, [str(i) for i in range(200)]) == split_hash(
        make_folds(labels, cases, 5, 0.125, seed=0), [str(i) for i in range(200)]
    )
    with pytest.raises(ValueError, match="both val and test"):
        FoldSplit("x", np.array([0]), np.array([1]), np.array([1])).check()
    _ = rng


def test_h5bags_is_lazy(tmp_path: Path) -> None:
    _write_h5(tmp_path / "a.h5", 4, 0)
    lazy = H5Bags({"a": [tmp_path / "a.h5"], "b": [tmp_path / "missing.h5"]})
    assert len(lazy) == 2 and lazy[0][0].shape == (4, D)  # the missing file is only touched when indexed
    with pytest.raises(FileNotFoundError):
        lazy[1]


@pytest.mark.realdata
def test_survival_h5_loader_on_real_tcga_table(shared_data, tmp_path: Path) -> None:
    """Real BLCA clinical rows, per-slide HDF5 bags; labels verified (event = 1 − censorship)."""
    table = pd.read_csv(shared_data / "tables" / "survpath_tcga" / "tcga_blca.csv")
    for i, row in table.iterrows():
        feats = np.full((1 + i % 3, D), row["age"] / 100, dtype=np.float32)
        with h5py.File(tmp_path / f"{row['slide_id'][:-4]}.h5", "w") as fh:
            fh.create_dataset("features", data=feats)
            fh.create_dataset("coords", data=np.zeros((len(feats), 2), dtype=np.int64))
    ctx = TaskContext(encoder="toy", base_dir=tmp_path, cache_dir=tmp_path)
    spec = {
        "labels": str(shared_data / "tables" / "survpath_tcga" / "tcga_blca.csv"),
        "features": str(tmp_path),
    }
    data = load_survival_task(spec, ctx)
    cases = table.drop_duplicates("case_id")
    assert len(data) == cases.shape[0] == 359
    by_case = cases.set_index("case_id")
    np.testing.assert_array_equal(data.event, 1 - by_case.loc[data.ids, "censorship"].to_numpy())
    np.testing.assert_array_equal(data.time, by_case.loc[data.ids, "survival_months"].to_numpy())
    n_slides = table.groupby("case_id").size()
    multi = n_slides[n_slides > 1].index[0]
    assert data.bags[data.ids.index(multi)].shape[0] == sum(
        1 + i % 3 for i in table.index[table.case_id == multi]
    )
    assert 0.2 < data.meta["event_rate"] < 0.7
    flipped = table.assign(censorship=1 - table["censorship"])  # the GPFM issue-#9 flip: ~55% → ~45% here,
    flipped.to_csv(tmp_path / "flipped.csv", index=False)  # so use a tight plausible range to catch it
    with pytest.raises(ValueError, match="flipped"):
        load_survival_task(
            {
                **spec,
                "labels": str(tmp_path / "flipped.csv"),
                "event_rate_range": [0.0, 0.45],
            },
            ctx,
        )
    dead = np.where(table["censorship"] == 0, "Dead", "Alive")
    table.assign(vital_status=dead).to_csv(tmp_path / "vs.csv", index=False)
    ok = load_survival_task(
        {**spec, "labels": str(tmp_path / "vs.csv"), "vital_status_column": "vital_status"}, ctx
    )
    assert len(ok) == 359
    table.assign(vital_status=dead[::-1]).to_csv(tmp_path / "vs_bad.csv", index=False)
    with pytest.raises(ValueError, match="vital_status"):
        load_survival_task(
            {**spec, "labels": str(tmp_path / "vs_bad.csv"), "vital_status_column": "vital_status"}, ctx
        )


@pytest.mark.realdata
def test_event_rate_check_refuses_flipped_real_brca(shared_data) -> None:
    table = pd.read_csv(shared_data / "tables" / "survpath_tcga" / "tcga_brca.csv").drop_duplicates("case_id")
    event = 1 - table["censorship"].to_numpy()
    assert check_event_rate(event, {}, "brca") == pytest.approx(0.117, abs=0.001)
    with pytest.raises(ValueError, match="flipped"):
        check_event_rate(1 - event, {}, "brca")  # GPFM issue #9: censorship read as event
    assert check_event_rate(1 - event, {"allow_implausible_event_rate": True}, "brca") > 0.85


def test_attention_artifact_keeps_case_members(slide_task: dict, tmp_path: Path) -> None:
    from gpfm.eval.mil.common import write_attention

    data = load_slide_task(
        {"labels": "labels.csv", "features": "features_toy", "level": "case"}, slide_task["ctx"]
    )
    scores = {bag_id: np.linspace(0, 1, len(b)) for bag_id, b in zip(data.ids, data.bags, strict=True)}
    written = write_attention(tmp_path / "attention.h5", data, scores)
    with (
        h5py.File(tmp_path / written["attention"]) as fh,
        h5py.File(tmp_path / written["attention_coords"]) as fc,
    ):
        ds = fh["case1"]
        assert list(ds.attrs["members"]) == ["case1-slide0", "case1-slide1"]
        assert sum(ds.attrs["member_sizes"]) == len(ds) == len(fc["case1"])
        np.testing.assert_array_equal(fc["case1"][()], data.coords[data.ids.index("case1")])
