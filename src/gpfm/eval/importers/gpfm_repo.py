"""The GPFM repository's own split and label files → the ``gpfm_public`` / ``gpfm_nbme`` layout.

Reads a copy of birkhoffkiki/GPFM's ``dataset_csv/``, ``splits712/`` and ``splits82/``.

* slide tasks: ``splits712/<DIR>/splits_0.csv`` (the single 7:1:2 split) joined with ``dataset_csv/<FILE>.csv`` on
  ``slide_id``. ``splits712/exclude_list.csv`` is NOT applied: it lists evaluation slides (it holds every val
  and test slide of PANDA's split), i.e. slides kept out of pretraining, not slides to drop from the task;
* survival: ``dataset_csv/survival_by_case/<COHORT>_Splits.csv`` — one row per case with ``Fold 0..4`` columns
  (``train``/``val``; GPFM tests on its val fold, spec §4) — becomes ``fold`` = the fold in which the case is
  held out, and ``slide_id`` = the feature file's stem.

The mapping below is the GPFM repository's naming (a fact about its files); tasks whose files are not in the
source are reported as missing with the file they need.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gpfm.errors import InputError
from gpfm.eval.importers import IMPORTERS
from gpfm.eval.importers.clam import clam_task_table
from gpfm.eval.importers.report import ImportReport, write_table

#: our wsi/<TASK>.csv name → (splits712 folder, dataset_csv label file)
SLIDE_TASKS: dict[str, tuple[str, str]] = {
    "BRACS-3": ("BRACS-3_100", "BRACS-3.csv"),
    "BRACS-7": ("BRACS_100", "BRACS.csv"),
    "CAMELYON16": ("camelyon_100", "camelyon.csv"),
    "TCGA-BRCA-IDC-ILC": ("TCGA_BRCA_subtyping_100", "BRCA_subtyping.csv"),
    "UBC-OCEAN": ("UBC-OCEAN_100", "UBC-OCEAN.csv"),
    "TCGA-RCC": ("RCC_100", "RCC.csv"),
    "TCGA-NSCLC": ("LUAD_LUSC_100", "LUAD_LUSC.csv"),
    "PANDA": ("PANDA_100", "PANDA.csv"),
    "TCGA-LUAD-TP53": ("TCGA_LUAD_TP53_100", "TCGA_LUAD_TP53.csv"),
    "TCGA-GBMLGG-IDH1": ("TCGA_GBMLGG_IDH1_100", "GBMLGG_IDH1.csv"),
    "EBRAINS": ("eBrains_oncotree_100", "ebrains_oncotree.csv"),
    "EBRAINS-FINE": ("eBrains_32_100", "ebrains_fine.csv"),
}
#: our survival/<TASK>.csv name → survival_by_case file
SURVIVAL_TASKS: dict[str, str] = {
    f"TCGA-{c}": f"TCGA_{c}_Splits.csv"
    for c in ("BRCA", "BLCA", "KIRC", "KIRP", "STAD", "CESC", "LUAD", "LUSC", "COADREAD", "GBM", "LGG", "HNSC",
              "SKCM")
} | {"CPTAC-LUAD": "CPTAC_LUAD_Splits.csv"}


def _find_root(source: Path) -> Path:
    for candidate in (source, *source.glob("*/")):
        if (candidate / "dataset_csv").is_dir():
            return candidate
    raise InputError(f"{source}: no dataset_csv/ folder; point at a copy of the GPFM repository (or the folder "
                     "holding its dataset_csv/, splits712/ and splits82/)")


def survival_table(path: Path, task: str, report: ImportReport) -> pd.DataFrame:
    """One ``<COHORT>_Splits.csv`` → ``case_id, slide_id, survival_months, censorship[, fold]``.

    A case's slides may be ``;``-joined (CPTAC) or a feature-file path (TCGA): one row per slide, id = file stem.
    A file without ``Fold k`` columns is an external test cohort (GPFM's CPTAC-LUAD) and gets no ``fold``.
    """
    table = pd.read_csv(path)
    folds = sorted((c for c in table.columns if c.lower().startswith("fold")), key=lambda c: int(c.split()[-1]))
    need = {"case_id", "survival_months", "censorship", "slide_id"}
    if need - set(table.columns):
        raise InputError(f"{path}: expected columns {sorted(need)} (+ 'Fold k' columns): GPFM survival splits")
    out = pd.DataFrame({
        "case_id": table["case_id"].astype(str),
        "slide_id": table["slide_id"].astype(str).str.split(";"),
        "survival_months": table["survival_months"].astype(float),
        "censorship": table["censorship"].astype(float).astype(int),
    })
    if folds:
        held_out = table[folds].astype(str).apply(lambda col: col.str.strip().str.lower()) == "val"
        per_case = held_out.sum(axis=1)
        if (per_case != 1).any():
            bad = table.loc[per_case != 1, "case_id"].iloc[0]
            raise InputError(f"{path}: case {bad} is held out in {int(per_case[per_case != 1].iloc[0])} folds; "
                             "each case must be 'val' in exactly one fold")
        out["fold"] = held_out.to_numpy().argmax(axis=1)
    out = out.explode("slide_id")
    out["slide_id"] = out["slide_id"].str.strip().map(lambda s: Path(s).stem)
    events = int((out.drop_duplicates("case_id")["censorship"] == 0).sum())
    report.found.append(f"{task}: {len(out)} slides, {out['case_id'].nunique()} cases, {events} events; "
                        + (f"{len(folds)} case-level folds" if folds else "external test cohort (no folds)"))
    return out.sort_values([c for c in ("fold", "case_id", "slide_id") if c in out]).reset_index(drop=True)


@IMPORTERS.register("gpfm-repo")
def import_gpfm_repo(source: Path, data_root: Path, *, overwrite: bool = False) -> ImportReport:
    """Every slide and survival task of the GPFM repository's files found under ``source``."""
    root = _find_root(Path(source))
    data_root = Path(data_root)
    report = ImportReport("gpfm-repo", str(root))
    for task, (split_dir, label_file) in SLIDE_TASKS.items():
        sdir, lfile = root / "splits712" / split_dir, root / "dataset_csv" / label_file
        if not sdir.is_dir() or not lfile.is_file():
            report.missing.append(f"{task}: needs splits712/{split_dir}/ and dataset_csv/{label_file}")
            continue
        table = clam_task_table(sdir, lfile, report, task)
        write_table(table, data_root, f"wsi/{task}.csv", report, overwrite)
    for task, file in SURVIVAL_TASKS.items():
        path = root / "dataset_csv" / "survival_by_case" / file
        if not path.is_file():
            report.missing.append(f"{task}: needs dataset_csv/survival_by_case/{file}")
            continue
        write_table(survival_table(path, task, report), data_root, f"survival/{task}.csv", report, overwrite)
    if {"survival/TCGA-LUAD.csv", "survival/CPTAC-LUAD.csv"} <= set(report.written):
        write_table(external_survival(data_root), data_root, "survival/TCGA-LUAD+CPTAC-LUAD.csv", report, overwrite)
        report.found.append("TCGA-LUAD+CPTAC-LUAD: GPFM's external survival task (train TCGA-LUAD, fold 0 held "
                            "out for validation; test CPTAC-LUAD)")
    return report


def external_survival(data_root: Path) -> pd.DataFrame:
    """GPFM's external survival task: TCGA-LUAD trains (its fold 0 validates), CPTAC-LUAD tests."""
    tcga = pd.read_csv(data_root / "survival" / "TCGA-LUAD.csv")
    cptac = pd.read_csv(data_root / "survival" / "CPTAC-LUAD.csv")
    tcga["split"] = ["val" if f == 0 else "train" for f in tcga.pop("fold")]
    cptac["split"] = "test"
    return pd.concat([tcga, cptac], ignore_index=True)
