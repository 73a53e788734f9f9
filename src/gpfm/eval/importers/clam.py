"""CLAM-style splits: ``splits_<k>.csv`` with ``train, val, test`` columns of slide ids, plus a label table.

The label table has ``slide_id`` and ``label`` (and ``case_id``; CLAM's ``dataset_csv`` layout). One split
folder becomes ``wsi/<TASK>.csv``: ``split`` from ``splits_0.csv`` and, when there are several, ``fold_<k>``
columns (train/val/test per row) that a suite reads with ``fold_columns``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from gpfm.errors import InputError
from gpfm.eval.importers import IMPORTERS
from gpfm.eval.importers.report import ImportReport, write_table

_SPLIT_FILE = re.compile(r"^splits_(\d+)\.csv$")
PARTS = ("train", "val", "test")


def read_clam_split(path: Path) -> dict[str, str]:
    """Map each slide id to ``train``/``val``/``test`` from one ``splits_<k>.csv`` (never two sides)."""
    table = pd.read_csv(path, dtype=str)
    missing = [c for c in PARTS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: not a CLAM split file (no {', '.join(missing)} column); expected columns "
                         "train, val, test of slide ids")
    side: dict[str, str] = {}
    for part in PARTS:
        for slide in table[part].dropna().astype(str).str.strip():
            if slide and side.setdefault(slide, part) != part:
                raise InputError(f"{path}: slide {slide!r} is in both {side[slide]} and {part}; fix the split file")
    return side


def split_files(folder: Path) -> list[Path]:
    """``splits_<k>.csv`` files of a folder in k order (the ``_bool``/``_descriptor`` twins are ignored)."""
    found = sorted((p for p in folder.iterdir() if _SPLIT_FILE.match(p.name)),
                   key=lambda p: int(_SPLIT_FILE.match(p.name).group(1)))
    if not found:
        raise InputError(f"{folder}: no splits_<k>.csv files; point at a CLAM split folder")
    return found


def clam_task_table(split_dir: Path, labels_csv: Path, report: ImportReport, task: str) -> pd.DataFrame:
    """The ``wsi/<TASK>.csv`` table of one CLAM split folder and its label table."""
    labels = pd.read_csv(labels_csv, dtype=str)
    for col in ("slide_id", "label"):
        if col not in labels.columns:
            raise InputError(f"{labels_csv}: no {col!r} column; a CLAM label table has slide_id, label (case_id)")
    labels["slide_id"] = labels["slide_id"].str.strip()
    if "case_id" not in labels.columns:
        labels["case_id"] = labels["slide_id"]
    labels = labels.drop_duplicates("slide_id")
    splits = [read_clam_split(p) for p in split_files(split_dir)]
    first = splits[0]
    out = labels[labels["slide_id"].isin(first)].copy()
    unlabelled = sorted(set(first) - set(labels["slide_id"]))
    if unlabelled:
        report.dropped.append(f"{task}: {len(unlabelled)} split slide(s) have no row in {labels_csv.name} "
                              f"(e.g. {unlabelled[0]})")
    unsplit = len(labels) - len(out)
    if unsplit:
        report.dropped.append(f"{task}: {unsplit} labelled slide(s) are in no split of {split_dir.name}")
    out["split"] = out["slide_id"].map(first)
    if len(splits) > 1:
        for k, side in enumerate(splits):
            out[f"fold_{k}"] = out["slide_id"].map(side)
    counts = out["split"].value_counts()
    report.found.append(f"{task}: {len(out)} slides, {out['case_id'].nunique()} cases, "
                        f"{out['label'].nunique()} classes; split {'/'.join(str(counts.get(p, 0)) for p in PARTS)}"
                        + (f"; {len(splits)} folds" if len(splits) > 1 else ""))
    cols = ["slide_id", "case_id", "label", "split"] + [c for c in out.columns if c.startswith("fold_")]
    return out[cols].sort_values("slide_id").reset_index(drop=True)


@IMPORTERS.register("clam")
def import_clam(source: Path, data_root: Path, *, task: str, labels: Path, overwrite: bool = False) -> ImportReport:
    """One CLAM split folder (``source``) + its label CSV → ``wsi/<task>.csv``."""
    report = ImportReport("clam", str(source))
    table = clam_task_table(Path(source), Path(labels), report, task)
    write_table(table, Path(data_root), f"wsi/{task}.csv", report, overwrite)
    return report
