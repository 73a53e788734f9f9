"""Regenerate gpfm's shipped TCGA survival folds from public clinical tables (and their SHA256SUMS).

    python scripts/make_tcga_survival_folds.py ../shared/data/tables/survpath_tcga

reads every ``tcga_<cohort>.csv`` there (SurvPath's per-slide layout of the TCGA clinical data: case_id,
slide_id, survival_months, censorship) and writes ``src/gpfm/eval/suites/splits/tcga_<cohort>_survival_folds.csv``
(case_id, fold) with :func:`gpfm.eval.importers.tcga_survival.make_case_folds` — deterministic, so a rerun
reproduces the shipped files byte for byte (a test checks this).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pandas as pd

from gpfm.eval.importers.tcga_survival import case_table, make_case_folds

OUT = Path(__file__).resolve().parents[1] / "src" / "gpfm" / "eval" / "suites" / "splits"


def main(tables: Path) -> None:
    """Write one folds file per clinical table, then SHA256SUMS."""
    OUT.mkdir(parents=True, exist_ok=True)
    for table_path in sorted(tables.glob("tcga_*.csv")):
        cohort = table_path.stem.removeprefix("tcga_")
        table = case_table(pd.read_csv(table_path), table_path)
        folds = make_case_folds(table.drop_duplicates("case_id"))
        folds.to_csv(OUT / f"tcga_{cohort}_survival_folds.csv", index=False, lineterminator="\n")
        print(f"{cohort}: {len(folds)} cases")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(OUT.glob("*_folds.csv"))]
    (OUT / "SHA256SUMS").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
