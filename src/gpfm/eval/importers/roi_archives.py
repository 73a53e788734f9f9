"""The original archive layouts of public ROI datasets → ``roi/<DATASET>/labels.csv`` (``path, label, split``).

Images are referenced in place (paths relative to the output folder), never copied. Each importer keeps the
dataset's official split and says what it found; counts that differ from the published ones are reported.

* ``crc-100k``: ``NCT-CRC-HE-100K/<CLASS>/*.tif`` (train) + ``CRC-VAL-HE-7K/<CLASS>/*.tif`` (test), 9 classes
  (Kather et al. 2019; published sizes 100,000 and 7,180). ``NCT-CRC-HE-100K-NONORM`` is accepted for the
  "raw" setting (pass it as the train folder name with ``variant=nonorm``).
* ``mhist``: ``annotations.csv`` (``Image Name, Majority Vote Label, Number of Annotators who Selected SSA
  (Out of 7), Partition``) + ``images/`` (Wei et al. 2021; official 2,175 train / 977 test).
* ``class-folders``: any ``<root>/<CLASS>/*`` archive without an official split: a seeded split by file
  hash groups (byte-identical images never straddle it), recorded as such.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from gpfm.errors import InputError
from gpfm.eval.importers import IMPORTERS
from gpfm.eval.importers.report import ImportReport, write_table

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
CRC_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
CRC_PUBLISHED = {"train": 100_000, "test": 7_180}
MHIST_PUBLISHED = {"train": 2_175, "test": 977}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _rel(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def _check_counts(report: ImportReport, name: str, table: pd.DataFrame, published: dict[str, int]) -> None:
    for part, n in published.items():
        got = int((table["split"] == part).sum())
        if got != n:
            report.dropped.append(f"{name}: {part} has {got} images, the published release has {n} (a partial "
                                  "or modified copy?)")


@IMPORTERS.register("crc-100k")
def import_crc100k(source: Path, data_root: Path, *, variant: str = "norm", overwrite: bool = False) -> ImportReport:
    """NCT-CRC-HE-100K (train) + CRC-VAL-HE-7K (test) under ``source`` → ``roi/CRC-100K/labels.csv``."""
    source, data_root = Path(source), Path(data_root)
    report = ImportReport("crc-100k", str(source))
    train_name = {"norm": "NCT-CRC-HE-100K", "nonorm": "NCT-CRC-HE-100K-NONORM"}.get(variant)
    if train_name is None:
        raise InputError(f"variant {variant!r}: use norm or nonorm")
    name = "CRC-100K" if variant == "norm" else "CRC-100K-NONORM"
    out_dir = data_root / "roi" / name
    rows = []
    for part, folder in (("train", source / train_name), ("test", source / "CRC-VAL-HE-7K")):
        if not folder.is_dir():
            report.missing.append(f"{name}: {folder} (unzip {folder.name}.zip from Zenodo record 1214456)")
            continue
        for cls in CRC_CLASSES:
            cdir = folder / cls
            if not cdir.is_dir():
                report.missing.append(f"{name}: class folder {cdir}")
                continue
            rows += [(_rel(p, out_dir), cls, part) for p in _images(cdir)]
    if report.missing:
        return report
    table = pd.DataFrame(rows, columns=["path", "label", "split"])
    _check_counts(report, name, table, CRC_PUBLISHED)
    report.found.append(f"{name}: {len(table)} images, 9 classes; official split "
                        f"{(table.split == 'train').sum()} train / {(table.split == 'test').sum()} test")
    write_table(table, data_root, f"roi/{name}/labels.csv", report, overwrite)
    return report


@IMPORTERS.register("mhist")
def import_mhist(source: Path, data_root: Path, *, overwrite: bool = False) -> ImportReport:
    """MHIST's ``annotations.csv`` + ``images/`` → ``roi/MHIST/labels.csv`` (official partition)."""
    source, data_root = Path(source), Path(data_root)
    report = ImportReport("mhist", str(source))
    ann, images = source / "annotations.csv", source / "images"
    if not ann.is_file() or not images.is_dir():
        report.missing.append(f"MHIST: {ann} and {images}/ (the dataset is released on request: "
                              "bmirds.github.io/MHIST)")
        return report
    table = pd.read_csv(ann)
    need = {"Image Name", "Majority Vote Label", "Partition"}
    if need - set(table.columns):
        raise InputError(f"{ann}: columns {sorted(need)} expected (MHIST annotations)")
    out_dir = data_root / "roi" / "MHIST"
    paths = [images / str(n) for n in table["Image Name"]]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        report.dropped.append(f"MHIST: {len(absent)} listed image(s) not in images/ (e.g. {absent[0].name})")
    keep = [p.is_file() for p in paths]
    out = pd.DataFrame({"path": [_rel(p, out_dir) for p, k in zip(paths, keep, strict=True) if k],
                        "label": table.loc[keep, "Majority Vote Label"].astype(str).to_numpy(),
                        "split": table.loc[keep, "Partition"].astype(str).str.lower().to_numpy()})
    _check_counts(report, "MHIST", out, MHIST_PUBLISHED)
    report.found.append(f"MHIST: {len(out)} images, classes {sorted(out.label.unique())}; official split "
                        f"{(out.split == 'train').sum()} train / {(out.split == 'test').sum()} test")
    write_table(out, data_root, "roi/MHIST/labels.csv", report, overwrite)
    return report


@IMPORTERS.register("class-folders")
def import_class_folders(source: Path, data_root: Path, *, name: str, test_size: float = 0.3, seed: int = 0,
                         overwrite: bool = False) -> ImportReport:
    """``<source>/<CLASS>/*`` without an official split → a seeded split by content-hash groups."""
    source, data_root = Path(source), Path(data_root)
    report = ImportReport("class-folders", str(source))
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and _images(p))
    if len(classes) < 2:
        raise InputError(f"{source}: needs at least two class folders with images")
    out_dir = data_root / "roi" / name
    rows = []
    for cls in classes:
        for p in _images(source / cls):
            rows.append((_rel(p, out_dir), cls, hashlib.sha256(p.read_bytes()).hexdigest()))
    table = pd.DataFrame(rows, columns=["path", "label", "group"])
    groups = np.array(sorted(table["group"].unique()))
    rng = np.random.default_rng(seed)
    test_groups = set(rng.choice(groups, size=max(1, round(test_size * len(groups))), replace=False))
    table["split"] = np.where(table["group"].isin(test_groups), "test", "train")
    report.found.append(f"{name}: {len(table)} images, {len(classes)} classes; NO official split: seeded "
                        f"(seed {seed}) {1 - test_size:.0%}/{test_size:.0%} by sha256 groups")
    write_table(table[["path", "label", "split", "group"]], data_root, f"roi/{name}/labels.csv", report, overwrite)
    return report
