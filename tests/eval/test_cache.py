"""Feature cache: keyed by encoder/weights/recipe/precision/dataset, reused without re-embedding; loader."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gpfm.eval.data.cache as cache_mod
from gpfm.eval import TASK_LOADERS, TaskContext
from gpfm.eval.data.cache import RoiFeatureCache, dataset_hash, encoder_identity, recipe_hash
from gpfm.eval.data.roi import RoiFeatures, list_csv, list_folder

ENCODER = "efficientnet-lite0-imagenet"


@pytest.fixture(scope="module")
def tiny_encoder():
    """EfficientNet-Lite0 with random weights: a real Encoder that needs no weights file."""
    from gpfm.models import create_encoder

    return create_encoder(ENCODER, weights="random", device="cpu", precision="fp32", verbose=False)


def _write_images(root: Path, per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


@pytest.fixture
def count_embeds(monkeypatch):
    calls: list[int] = []
    original = cache_mod.embed_images

    def counting(encoder, paths, **kwargs):
        calls.append(len(paths))
        return original(encoder, paths, **kwargs)

    monkeypatch.setattr(cache_mod, "embed_images", counting)
    return calls


def test_cache_reuses_features_and_keys_on_content(tmp_path, tiny_encoder, count_embeds) -> None:
    data = tmp_path / "data"
    _write_images(data)
    listing = list_folder(data)
    cache = RoiFeatureCache(tmp_path / "cache")
    first = cache.get_or_embed(data, listing.ids, tiny_encoder, labels=listing.labels, batch_size=4)
    assert not first.reused and count_embeds == [6]
    # rows follow sorted ids and equal a direct embedding of each image
    with Image.open(data / first.ids[2]) as im:
        direct = tiny_encoder.embed(tiny_encoder.transform(im)[None]).numpy()[0]
    np.testing.assert_allclose(first.features[2], direct, rtol=1e-4, atol=1e-5)
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["ids"] == sorted(listing.ids) and manifest["shape"] == [6, tiny_encoder.embed_dim]
    assert manifest["labels"] == [i.split("/")[0] for i in sorted(listing.ids)]
    assert first.key.relative_path().parts[:5] == (
        "roi",
        ENCODER,
        "random",
        recipe_hash(tiny_encoder.spec.preprocess.to_dict(), tiny_encoder.spec.pooling),
        "fp32",
    )

    second = cache.get_or_embed(data, listing.ids[::-1], tiny_encoder)
    assert second.reused and count_embeds == [6]  # no encoder call
    np.testing.assert_array_equal(second.features, first.features)

    # a changed image (size/mtime) changes the dataset hash → a new entry is embedded
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(data / "a" / "0.png")
    third = cache.get_or_embed(data, listing.ids, tiny_encoder)
    assert not third.reused and count_embeds == [6, 6] and third.key.dataset != first.key.dataset


def test_cache_rebuilds_incomplete_entry_and_named_encoder_key(tmp_path, tiny_encoder, count_embeds) -> None:
    data = tmp_path / "data"
    _write_images(data, per_class=2)
    ids = list_folder(data).ids
    cache = RoiFeatureCache(tmp_path / "cache")
    first = cache.get_or_embed(data, ids, tiny_encoder)
    (first.path / "manifest.json").unlink()  # as after a crash between the two writes
    assert not cache.get_or_embed(data, ids, tiny_encoder).reused and len(count_embeds) == 2
    # the key of a named encoder is computed without building it, and matches the built encoder's
    sha, recipe, precision = encoder_identity(ENCODER, "random", "cpu", "fp32")
    assert (sha, recipe, precision) == ("random", first.key.recipe, "fp32")
    named = cache.get_or_embed(data, ids, ENCODER, weights="random", precision="fp32")
    assert named.reused and len(count_embeds) == 2


def test_dataset_hash_modes_and_duplicate_ids(tmp_path, tiny_encoder) -> None:
    data = tmp_path / "data"
    _write_images(data, per_class=1)
    ids = list_folder(data).ids
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)  # copytree keeps mtimes (copy2), content identical
    assert dataset_hash(data, ids, "content") == dataset_hash(copy, ids, "content")
    os.utime(copy / ids[0], ns=(1, 1))
    assert dataset_hash(data, ids, "stat") != dataset_hash(copy, ids, "stat")
    assert dataset_hash(data, ids, "content") == dataset_hash(copy, ids, "content")
    with pytest.raises(ValueError, match="duplicate item ids"):
        RoiFeatureCache(tmp_path / "c").get_or_embed(data, [ids[0], ids[0]], tiny_encoder)


def test_csv_listing_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("image_path,cls\nx.png,a\n")
    with pytest.raises(ValueError, match="bad.csv: needs columns path"):
        list_csv(bad, None)
    missing = tmp_path / "m.csv"
    missing.write_text("path,label\nnope.png,a\n")
    with pytest.raises(FileNotFoundError, match="m.csv:2: image"):
        list_csv(missing, None)


@pytest.mark.realdata
def test_roi_images_loader_on_real_lc25000_subset(tmp_path, lc25000_dir, lc25000_table, count_embeds) -> None:
    """12 real patches per class plus byte-identical copies: duplicates stay on one side, rerun reuses."""
    root = tmp_path / "lc"
    by_class: dict[str, list[dict[str, str]]] = {}
    for row in sorted(lc25000_table, key=lambda r: r["file"]):
        by_class.setdefault(row["label"], []).append(row)
    rows = []
    for label, items in sorted(by_class.items()):
        for row in items[:12]:
            dest = root / row["file"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lc25000_dir / row["file"], dest)
            rows.append((row["file"], label))
        # a byte-identical duplicate under another name, as LC25000's augmentation produced
        dup = root / label / "dup_of_first.jpeg"
        shutil.copy2(lc25000_dir / items[0]["file"], dup)
        rows.append((dup.relative_to(root).as_posix(), label))
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label"), *rows])
    ctx = TaskContext(
        encoder=ENCODER, base_dir=tmp_path, cache_dir=tmp_path / "cache", precision="fp32", batch_size=16
    )
    block = {
        "kind": "roi_images",
        "root": "lc",
        "csv": "labels.csv",
        "split": {"method": "group_hash", "test_size": 0.34, "val_size": 0.2, "seed": 0},
    }
    torch.manual_seed(0)
    data = TASK_LOADERS.get("roi_images")(block, ctx)
    assert isinstance(data, RoiFeatures) and data.features.shape == (39, 1280) and count_embeds == [39]
    assert data.label_names == sorted(by_class) and data.provenance["feature_cache_reused"] is False
    for label in data.label_names:
        first = f"{label}/{by_class[label][0]['file'].split('/')[-1]}"
        pair = np.isin(data.ids, [first, f"{label}/dup_of_first.jpeg"])
        assert pair.sum() == 2 and len(set(data.split[pair])) == 1  # duplicates on one side
        assert data.groups[pair][0] == data.groups[pair][1]
    assert all(data.counts()[s] > 0 for s in ("train", "val", "test"))
    assert len(data.provenance["split_hash"]) == 64 and data.provenance["weights_sha256"] != "random"

    again = TASK_LOADERS.get("roi_images")(block, ctx)
    assert again.provenance["feature_cache_reused"] is True and count_embeds == [39]
    np.testing.assert_array_equal(again.features, data.features)
    assert again.provenance["split_hash"] == data.provenance["split_hash"]
    # real ImageNet features separate these three tissue classes even on 39 images
    centroid = np.stack([data.features[data.labels == c].mean(0) for c in range(3)])
    nearest = np.linalg.norm(data.features[:, None] - centroid[None], axis=2).argmin(1)
    assert (nearest == data.labels).mean() > 0.8

    with pytest.raises(ValueError, match="unknown split method 'random'"):
        TASK_LOADERS.get("roi_images")({**block, "split": {"method": "random"}}, ctx)
    with pytest.raises(ValueError, match="unknown key"):
        TASK_LOADERS.get("roi_images")({**block, "roots": "x"}, ctx)


def test_loader_csv_split_method_carves_val_and_rejects_leaks(tmp_path, count_embeds) -> None:
    """CSV split column without val rows: val is carved from train by groups; a group on two sides fails."""
    data_dir = tmp_path / "d"
    _write_images(data_dir, per_class=6)
    ids = sorted(list_folder(data_dir).ids)
    rows = [("path", "label", "split", "group")]
    for i, item in enumerate(ids):
        rows.append((item, item.split("/")[0], "test" if i % 6 == 0 else "train", f"patient{i // 2}"))
    with open(data_dir / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    ctx = TaskContext(
        encoder=ENCODER,
        base_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        precision="fp32",
        weights="random",
        batch_size=8,
    )
    block = {
        "kind": "roi_images",
        "root": "d",
        "csv": "labels.csv",
        "split": {"method": "csv", "val_size": 0.25, "seed": 0},
    }
    with pytest.raises(ValueError, match="appears in splits"):  # patient0 = rows 0 (test) and 1 (train)
        TASK_LOADERS.get("roi_images")(block, ctx)
    rows = [rows[0]] + [(r[0], r[1], "test" if int(r[3][7:]) % 3 == 0 else "train", r[3]) for r in rows[1:]]
    with open(data_dir / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    data = TASK_LOADERS.get("roi_images")(block, ctx)
    assert data.counts()["val"] > 0 and data.counts()["test"] == sum(r[2] == "test" for r in rows[1:])
    for g in np.unique(data.groups):
        assert len(set(data.split[data.groups == g])) == 1
    assert data.provenance["split"]["method"] == "csv" and count_embeds == [12]
    assert data.provenance["duplicate_groups_across_splits"] == 0
    # a byte-identical copy on the other side of an official split is counted and flagged, not fatal
    shutil.copy2(data_dir / rows[1][0], data_dir / "a" / "copy.png")
    with open(data_dir / "labels.csv", "a", newline="") as fh:
        csv.writer(fh).writerow(("a/copy.png", "a", "train" if rows[1][2] == "test" else "test", "patient-x"))
    dup = TASK_LOADERS.get("roi_images")(block, ctx)
    assert dup.provenance["duplicate_groups_across_splits"] == 1
    with pytest.raises(ValueError, match="unknown key"):
        TASK_LOADERS.get("roi_images")({**block, "split": {"method": "csv", "valsize": 0.1}}, ctx)
