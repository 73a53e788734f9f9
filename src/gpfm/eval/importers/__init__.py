"""Importers: the split and label files labs already have → the layout a gpfm suite reads.

``gpfm bench-import FORMAT SOURCE --data-root D`` writes under ``D`` (never into ``SOURCE``, never over a file
it did not write before without ``--overwrite``):

* ``wsi/<TASK>.csv`` — ``slide_id, case_id, label, split`` (+ ``fold_<k>`` columns when there are several splits);
* ``survival/<TASK>.csv`` — ``case_id, slide_id, survival_months, censorship, fold``;
* ``roi/<DATASET>/labels.csv`` — ``path, label, split[, group]`` (paths relative to that folder; the images stay
  where they are and are referenced, not copied, unless the archive is inside ``D``).

Every importer returns an :class:`~gpfm.eval.importers.report.ImportReport`: the files written with their
SHA-256, what was found, what is missing or was dropped and why. One file per source format.
"""

from gpfm.eval.importers.report import ImportReport
from gpfm.registry import Registry

#: name → ``fn(source, data_root, *, overwrite=False, **options) -> ImportReport``; one module per format
IMPORTERS: Registry = Registry("importer", discover="gpfm.eval.importers")

__all__ = ["IMPORTERS", "ImportReport"]
