"""Duplicate- and group-aware stratified splits and the split hash."""

from __future__ import annotations

import numpy as np
import pytest

from gpfm.eval.data.splits import (
    carve_val,
    check_groups_disjoint,
    merge_groups,
    normalize_split_name,
    split_hash,
    stratified_group_split,
)


def test_merge_groups_is_transitive_over_keys() -> None:
    # items 0-1 share a hash, 1-2 share a patient, 3 alone, 4-5 share a patient; "" means no group
    hashes = ["h0", "h0", "h2", "h3", "h4", "h5"]
    patients = ["", "p1", "p1", "", "p4", "p4"]
    g = merge_groups(hashes, patients)
    assert g[0] == g[1] == g[2]
    assert g[4] == g[5] and len({g[0], g[3], g[4]}) == 3
    with pytest.raises(ValueError, match="differ in length"):
        merge_groups(["a"], ["a", "b"])


def test_stratified_group_split_keeps_groups_whole_and_stratifies() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [300, 200, 100])
    groups = rng.integers(0, 250, size=600)  # random groups, many spanning two classes
    split = stratified_group_split(labels, groups, test_size=0.3, val_size=0.1, seed=0)
    for g in np.unique(groups):
        assert len(set(split[groups == g])) == 1, g
    for c in (0, 1, 2):
        frac = (split[labels == c] == "test").mean()
        assert 0.15 < frac < 0.45, (c, frac)
    assert 0.2 < (split == "test").mean() < 0.4 and 0.04 < (split == "val").mean() < 0.17
    # deterministic for a seed, different for another
    assert np.array_equal(split, stratified_group_split(labels, groups, 0.3, 0.1, seed=0))
    assert not np.array_equal(split, stratified_group_split(labels, groups, 0.3, 0.1, seed=1))


def test_singleton_groups_give_exact_stratified_shares() -> None:
    labels = np.repeat([0, 1], [100, 50])
    split = stratified_group_split(labels, None, test_size=0.2, val_size=0.1, seed=3)
    assert (split[labels == 0] == "test").sum() == 20 and (split[labels == 1] == "test").sum() == 10
    assert (split[labels == 0] == "val").sum() == 10 and (split[labels == 1] == "val").sum() == 5
    with pytest.raises(ValueError, match="must be in"):
        stratified_group_split(labels, None, test_size=0.7, val_size=0.4)


def test_carve_val_moves_whole_groups_out_of_train_only() -> None:
    labels = np.repeat([0, 1], 50)
    groups = np.arange(100) // 2
    split = np.where(groups % 5 == 0, "test", "train")
    out = carve_val(split, labels, groups, val_size=0.2, seed=0)
    assert set(out[split == "test"]) == {"test"}  # test untouched
    assert 0 < (out == "val").sum() < (split == "train").sum()
    check_groups_disjoint(out, groups)


def test_check_groups_disjoint_names_the_leak() -> None:
    with pytest.raises(ValueError, match="group 'x'.*'test', 'train'"):
        check_groups_disjoint(np.array(["train", "test", "train"]), np.array(["x", "x", "y"]))


def test_split_hash_ignores_row_order_but_not_assignment() -> None:
    ids, split = ["a", "b", "c"], ["train", "test", "val"]
    h = split_hash(ids, split)
    assert h == split_hash(ids[::-1], split[::-1])
    assert h != split_hash(ids, ["train", "val", "test"])


def test_split_name_aliases() -> None:
    assert normalize_split_name(" Validation ") == "val" and normalize_split_name("TEST") == "test"
    with pytest.raises(ValueError, match="unknown split value 'holdout'"):
        normalize_split_name("holdout")
