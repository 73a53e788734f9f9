"""Train / validation / test splits of bags: pre-defined in the label table, or made here, case-grouped.

A :class:`FoldSplit` holds row indices into a :class:`~gpfm.eval.data.bags.BagDataset`. Rules enforced everywhere:
train, val and test are disjoint (val never equals test — the GPFM survival splits' flaw),
and no case has bags on two sides.

Table split keys (the suite's ``data:`` block), first match wins:

* ``split_column``: one fixed split, values ``train`` / ``val`` (or ``validation``) / ``test``;
* ``fold_columns``: a list of such columns, one fold each (CLAM-style k-fold files merged into the table);
* ``fold_column``: integer fold ids 0..K−1; fold k tests on k and, by default (``val_fold: carve``), the
  protocol carves its validation cases (``val_fraction``, stratified, case-grouped) from the other folds;
  ``val_fold: next`` validates on fold k+1 (mod K) instead;
* none: the protocol makes ``n_folds`` stratified, case-grouped folds with :func:`make_folds`.

A fold with an empty val set gets one carved from its training rows by :func:`with_validation`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one train/val/test partition.

    Attributes:
        name: fold name (``fold0``, ``fixed``...).
        train: training rows.
        val: validation rows (early stopping and selection only).
        test: test rows (never used for selection, except in ``-faithful`` protocols).
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def check(self, cases: list[str] | None = None, *, allow_val_equals_test: bool = False) -> None:
        """Raise when partitions overlap (in rows or cases) or train/test is empty."""
        if len(self.train) == 0 or len(self.test) == 0:
            raise ValueError(
                f"split {self.name}: train ({len(self.train)}) and test ({len(self.test)}) must be non-empty"
            )
        pairs = [("train", self.train, "test", self.test), ("train", self.train, "val", self.val)]
        if not allow_val_equals_test:
            pairs.append(("val", self.val, "test", self.test))
        for a, ia, b, ib in pairs:
            keys_a = {cases[i] for i in ia} if cases else set(ia.tolist())
            keys_b = {cases[i] for i in ib} if cases else set(ib.tolist())
            shared = keys_a & keys_b
            if shared:
                raise ValueError(
                    f"split {self.name}: {len(shared)} case(s) are in both {a} and {b} "
                    f"(e.g. {sorted(shared)[0]}); "
                    "splits must be disjoint and case-level"
                )


def make_folds(
    strata: np.ndarray, groups: list[str], n_folds: int = 5, val_fraction: float = 0.125, seed: int = 0
) -> list[FoldSplit]:
    """Stratified, case-grouped k-fold splits, each with a validation set carved from its training part.

    Args:
        strata: (n,) labels to stratify on (class, or event for survival).
        groups: (n,) case ids; a case stays on one side.
        n_folds: number of folds (each row is tested once).
        val_fraction: share of a fold's training cases moved to validation (0.125 of 80% = 10%, i.e. 7:1:2).
        seed: shuffling seed.
    """
    strata = np.asarray(strata)
    gkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for k, (train, test) in enumerate(gkf.split(np.zeros(len(strata)), strata, groups)):
        fold = FoldSplit(f"fold{k}", np.sort(train), np.array([], dtype=np.int64), np.sort(test))
        folds.append(with_validation(fold, strata, groups, val_fraction, seed + k))
    return folds


def with_validation(
    fold: FoldSplit, strata: np.ndarray, groups: list[str], val_fraction: float = 0.125, seed: int = 0
) -> FoldSplit:
    """Carve a stratified, case-grouped validation set out of ``fold.train`` when ``fold.val`` is empty."""
    if len(fold.val) or val_fraction <= 0:
        return fold
    train = fold.train
    n_splits = max(2, round(1 / val_fraction))
    sub_groups = [groups[i] for i in train]
    if len(set(sub_groups)) < n_splits:
        raise ValueError(
            f"split {fold.name}: too few training cases ({len(set(sub_groups))}) to carve validation"
        )
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, val = next(sgkf.split(np.zeros(len(train)), np.asarray(strata)[train], sub_groups))
    return FoldSplit(fold.name, np.sort(train[keep]), np.sort(train[val]), fold.test)


def _partition(values: pd.Series, name: str) -> FoldSplit:
    v = values.astype(str).str.strip().str.lower().replace({"validation": "val", "valid": "val"})
    unknown = sorted(set(v) - {"train", "val", "test", "nan", ""})
    if unknown:
        raise ValueError(f"split column {values.name!r}: values {unknown} are not train/val/test")
    idx = np.arange(len(v))
    return FoldSplit(
        name, idx[(v == "train").to_numpy()], idx[(v == "val").to_numpy()], idx[(v == "test").to_numpy()]
    )


def folds_from_table(
    rows: pd.DataFrame, spec: dict[str, Any], cases: list[str] | None = None
) -> list[FoldSplit] | None:
    """Splits declared in a one-row-per-bag table (see the module docstring), or None when none are declared.

    Args:
        rows: one row per bag, in bag order.
        spec: the task's ``data:`` block (split keys).
        cases: case id per row, to refuse a case on two sides.
    """
    if spec.get("split_column"):
        col = spec["split_column"]
        if col not in rows:
            raise ValueError(f"split_column {col!r} is not a column of the label table")
        folds = [_partition(rows[col], "fixed")]
    elif spec.get("fold_columns"):
        missing = [c for c in spec["fold_columns"] if c not in rows]
        if missing:
            raise ValueError(f"fold_columns {missing} are not columns of the label table")
        folds = [_partition(rows[c], str(c)) for c in spec["fold_columns"]]
    elif spec.get("fold_column"):
        col = spec["fold_column"]
        if col not in rows:
            raise ValueError(f"fold_column {col!r} is not a column of the label table")
        ids = rows[col].to_numpy()
        uniq = np.unique(ids)
        if len(uniq) < 2:
            raise ValueError(f"fold_column {col!r} has a single fold; k-fold needs at least 2")
        mode = spec.get("val_fold", "carve")
        if mode not in ("carve", "next"):
            raise ValueError(f"val_fold {mode!r} is unknown; use 'carve' (default) or 'next'")
        carve = mode == "carve"
        if not carve and len(uniq) < 3:
            raise ValueError(
                f"fold_column {col!r}: val_fold 'next' needs at least 3 folds; use val_fold: carve"
            )
        idx = np.arange(len(ids))
        folds = []
        for k, f in enumerate(uniq):
            test = idx[ids == f]
            val = np.array([], dtype=np.int64) if carve else idx[ids == uniq[(k + 1) % len(uniq)]]
            folds.append(FoldSplit(f"fold{k}", np.setdiff1d(idx, np.concatenate([test, val])), val, test))
    else:
        return None
    for fold in folds:
        fold.check(cases)
    return folds


def split_hash(folds: list[FoldSplit], ids: list[str]) -> str:
    """SHA-256 over the sorted ids of every partition of every fold (recorded with results)."""
    h = hashlib.sha256()
    for fold in folds:
        for part in (fold.train, fold.val, fold.test):
            h.update(("|".join(sorted(ids[i] for i in part)) + "\n").encode())
    return h.hexdigest()
