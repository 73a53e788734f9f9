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
* ``bach``: ``Photos/<Benign|InSitu|Invasive|Normal>/*.tif`` (400 images; no labelled test set: seeded split).
* ``breakhis``: ``BreaKHis_v1/.../SOB/<subtype>/<patient>/<magnification>/*.png``: one magnification, the four
  classes TA, MC, F, DC, patient-disjoint.
* ``pcam``: the six ``camelyonpatch_level_2_split_*_{x,y}.h5`` files (official 262,144 / 32,768 / 32,768).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from gpfm.errors import InputError
from gpfm.eval.importers import IMPORTERS
from gpfm.eval.importers.checksums import verify_published
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
    if variant == "norm":
        verify_published(["NCT-CRC-HE-100K.zip", "CRC-VAL-HE-7K.zip"], [source, source.parent], report)
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


BACH_CLASSES = ("Benign", "InSitu", "Invasive", "Normal")
BREAKHIS_FOUR = {"tubular_adenoma": "TA", "mucinous_carcinoma": "MC", "fibroadenoma": "F", "ductal_carcinoma": "DC"}


def _group_split(groups: pd.Series, test_size: float, seed: int) -> np.ndarray:
    uniq = np.array(sorted(groups.unique()))
    test = set(np.random.default_rng(seed).choice(uniq, size=max(1, round(test_size * len(uniq))), replace=False))
    return np.where(groups.isin(test), "test", "train")


@IMPORTERS.register("bach")
def import_bach(source: Path, data_root: Path, *, overwrite: bool = False) -> ImportReport:
    """ICIAR 2018 BACH ``Photos/<Benign|InSitu|Invasive|Normal>/*.tif`` → ``roi/BACH/labels.csv``.

    BACH releases no test labels and no patient ids: the split is seeded by image (30 % test), said as such.
    """
    source, data_root = Path(source), Path(data_root)
    report = ImportReport("bach", str(source))
    photos = next((p for p in (source / "Photos", source / "ICIAR2018_BACH_Challenge" / "Photos", source)
                   if all((p / c).is_dir() for c in BACH_CLASSES)), None)
    if photos is None:
        report.missing.append(f"BACH: {source}/Photos/{{{','.join(BACH_CLASSES)}}}/ (ICIAR2018_BACH_Challenge.zip from "
                              "iciar2018-challenge.grand-challenge.org)")
        return report
    out_dir = data_root / "roi" / "BACH"
    table = pd.DataFrame([(_rel(p, out_dir), c) for c in BACH_CLASSES for p in _images(photos / c)],
                         columns=["path", "label"])
    table["split"] = _group_split(table["path"], 0.3, 0)
    _check_counts(report, "BACH", table.assign(split="all"), {"all": 400})
    report.found.append(f"BACH: {len(table)} images, 4 classes; no official labelled test set: seeded 70/30 by image")
    write_table(table, data_root, "roi/BACH/labels.csv", report, overwrite)
    return report


@IMPORTERS.register("breakhis")
def import_breakhis(source: Path, data_root: Path, *, variant: str = "40X", overwrite: bool = False) -> ImportReport:
    """BreaKHis_v1 ``.../SOB/<subtype>/<patient>/<40X|100X|200X|400X>/*.png`` → ``roi/BreakHis/labels.csv``.

    The task of the spec (§10): one magnification (``--variant``, default 40X), the four classes TA, MC, F, DC,
    patient-disjoint (``group`` = the patient folder; 30 % of each class's patients tested, seed 0).
    """
    source, data_root = Path(source), Path(data_root)
    report = ImportReport("breakhis", str(source))
    rows, other = [], 0
    for mag_dir in sorted(source.rglob(variant)):
        if not mag_dir.is_dir():
            continue
        patient_dir = mag_dir.parent
        subtype = patient_dir.parent.name
        images = _images(mag_dir)
        if subtype not in BREAKHIS_FOUR:
            other += len(images)
            continue
        rows += [(p, BREAKHIS_FOUR[subtype], patient_dir.name) for p in images]
    if not rows:
        report.missing.append(f"BreakHis: no <subtype>/<patient>/{variant}/ image folders under {source} "
                              "(BreaKHis_v1.tar.gz, on request from the authors)")
        return report
    out_dir = data_root / "roi" / "BreakHis"
    table = pd.DataFrame([(_rel(p, out_dir), lab, grp) for p, lab, grp in rows], columns=["path", "label", "group"])
    table["split"] = "train"
    for _label, part in table.groupby("label"):
        table.loc[part.index, "split"] = _group_split(part["group"], 0.3, 0)
    if other:
        report.dropped.append(f"BreakHis: {other} {variant} images of the other subtypes (A, PT, LC, PC) are not "
                              "in the 4-class task")
    report.found.append(f"BreakHis {variant}: {len(table)} images, {table['group'].nunique()} patients, classes "
                        f"{sorted(table['label'].unique())}; patient-disjoint seeded split")
    write_table(table[["path", "label", "split", "group"]], data_root, "roi/BreakHis/labels.csv", report, overwrite)
    return report


PCAM_PARTS = {"train": "train", "valid": "val", "test": "test"}
PCAM_PUBLISHED = {"train": 262_144, "val": 32_768, "test": 32_768}


@IMPORTERS.register("pcam")
def import_pcam(source: Path, data_root: Path, *, overwrite: bool = False) -> ImportReport:
    """PatchCamelyon's ``camelyonpatch_level_2_split_<part>_{x,y}.h5`` → PNG tiles + ``roi/PCam/labels.csv``.

    PCam ships pixels in HDF5, which an image task cannot read in place: the tiles are written once as lossless
    PNG under ``roi/PCam/images/<part>/`` (an existing tile is kept). Official splits; label 1 = tumour.
    """
    import h5py

    source, data_root = Path(source), Path(data_root)
    report = ImportReport("pcam", str(source))
    out_dir = data_root / "roi" / "PCam"
    present = [f"camelyonpatch_level_2_split_{p}_{k}.h5" for p in PCAM_PARTS for k in ("x", "y")
               if (source / f"camelyonpatch_level_2_split_{p}_{k}.h5").is_file()]
    verify_published(present, [source], report)  # the inputs themselves: a damaged file never becomes tiles
    rows = []
    for part, split in PCAM_PARTS.items():
        xs, ys = (source / f"camelyonpatch_level_2_split_{part}_{k}.h5" for k in ("x", "y"))
        if not xs.is_file() or not ys.is_file():
            report.missing.append(f"PCam: {xs.name} and {ys.name} (gunzip the files of github.com/basveeling/pcam)")
            continue
        with h5py.File(xs, "r") as fx, h5py.File(ys, "r") as fy:
            x, y = fx["x"], fy["y"]
            if len(x) != len(y):
                raise InputError(f"{xs}: {len(x)} images but {ys.name} has {len(y)} labels")
            folder = out_dir / "images" / part
            folder.mkdir(parents=True, exist_ok=True)
            labels = np.asarray(y).reshape(len(y))
            for i in range(len(x)):
                path = folder / f"{i:06d}.png"
                if not path.is_file():
                    tmp = path.with_suffix(".png.tmp")
                    Image.fromarray(np.asarray(x[i], dtype=np.uint8)).save(tmp, format="PNG")
                    tmp.replace(path)
                rows.append((path.relative_to(out_dir).as_posix(), "tumor" if labels[i] else "normal", split))
    if not rows:
        return report
    table = pd.DataFrame(rows, columns=["path", "label", "split"])
    _check_counts(report, "PCam", table, {k: v for k, v in PCAM_PUBLISHED.items() if k in set(table["split"])})
    report.found.append(f"PCam: {len(table)} tiles (96 px), official split "
                        + "/".join(str(int((table.split == s).sum())) for s in ("train", "val", "test")))
    write_table(table, data_root, "roi/PCam/labels.csv", report, overwrite)
    return report
