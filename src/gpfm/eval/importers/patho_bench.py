"""Patho-Bench task splits (MahmoodLab/Patho-Bench on Hugging Face): ``<source>/<task>/k=all.tsv`` + ``config.yaml``.

The TSV has one row per slide: the sample column named by ``config.yaml``'s ``sample_col`` (usually
``case_id``), ``slide_id``, the label column ``task_col`` and ``fold_<k>`` columns (``train``/``test``; Patho-Bench
has no validation set). The config's ``label_dict`` fixes the class order. Output: ``wsi/<TASK>.csv`` with
``slide_id, case_id, label, fold_0..`` (read by a suite with ``fold_columns``; ``split`` = ``fold_0``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from gpfm.errors import InputError
from gpfm.eval.importers import IMPORTERS
from gpfm.eval.importers.report import ImportReport, write_table


def patho_bench_table(task_dir: Path, report: ImportReport, task: str) -> tuple[pd.DataFrame, list[str]]:
    """``wsi/<TASK>.csv`` rows and the class order of one Patho-Bench task folder."""
    tsv, cfg_path = task_dir / "k=all.tsv", task_dir / "config.yaml"
    for path in (tsv, cfg_path):
        if not path.is_file():
            raise InputError(f"{path}: missing; a Patho-Bench task folder holds k=all.tsv and config.yaml")
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    for key in ("task_col", "sample_col", "label_dict"):
        if key not in cfg:
            raise InputError(f"{cfg_path}: no {key!r}; not a Patho-Bench task config")
    table = pd.read_csv(tsv, sep="\t", dtype=str)
    label_col, sample_col = str(cfg["task_col"]), str(cfg["sample_col"])
    for col in (label_col, sample_col, "slide_id"):
        if col not in table.columns:
            raise InputError(f"{tsv}: no column {col!r} (named by config.yaml)")
    folds = sorted((c for c in table.columns if c.startswith("fold_")), key=lambda c: int(c.split("_")[1]))
    if not folds:
        raise InputError(f"{tsv}: no fold_<k> columns")
    names = [str(k) for k, _ in sorted(cfg["label_dict"].items(), key=lambda kv: kv[1])]
    unknown = sorted(set(table[label_col].dropna()) - set(names))
    if unknown:
        raise InputError(f"{tsv}: labels {unknown[:3]} are not in config.yaml's label_dict {names}")
    out = pd.DataFrame({"slide_id": table["slide_id"].str.strip(), "case_id": table[sample_col].str.strip(),
                        "label": table[label_col]})
    for c in folds:
        out[c] = table[c].str.strip().str.lower()
    out["split"] = out[folds[0]]
    report.found.append(f"{task}: {len(out)} slides, {out['case_id'].nunique()} cases, {len(names)} classes, "
                        f"{len(folds)} train/test folds (no validation set in Patho-Bench)")
    return out[["slide_id", "case_id", "label", "split", *folds]], names


@IMPORTERS.register("patho-bench")
def import_patho_bench(source: Path, data_root: Path, *, overwrite: bool = False) -> ImportReport:
    """Every ``<source>/<task>/`` (or ``source`` itself when it is one task folder) → ``wsi/<source>-<task>.csv``."""
    source = Path(source)
    report = ImportReport("patho-bench", str(source))
    task_dirs = [source] if (source / "k=all.tsv").is_file() else sorted(p.parent for p in source.rglob("k=all.tsv"))
    if not task_dirs:
        raise InputError(f"{source}: no k=all.tsv below it; point at a Patho-Bench splits folder")
    for task_dir in task_dirs:
        name = f"{task_dir.parent.name}-{task_dir.name}" if task_dir != source else task_dir.name
        table, names = patho_bench_table(task_dir, report, name)
        write_table(table, Path(data_root), f"wsi/{name}.csv", report, overwrite)
        report.found[-1] += f"; label order {names}"
    return report
