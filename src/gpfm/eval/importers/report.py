"""What an importer did: files written (with SHA-256), what it found, dropped and could not find."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gpfm.atomic import write_text_atomic
from gpfm.errors import InputError


@dataclass
class ImportReport:
    """The outcome of one import.

    Attributes:
        importer: importer name.
        source: what was read.
        written: written file (relative to the data root) → SHA-256.
        found: one line per task/dataset found (with counts).
        dropped: one line per group of rows left out, with the reason.
        missing: one line per expected input that is not there, with how to get it.
    """

    importer: str
    source: str
    written: dict[str, str] = field(default_factory=dict)
    found: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON form (``bench-import --json``)."""
        return {"importer": self.importer, "source": self.source, "written": self.written, "found": self.found,
                "dropped": self.dropped, "missing": self.missing}


def write_table(frame: pd.DataFrame, data_root: Path, relative: str, report: ImportReport,
                overwrite: bool = False) -> Path:
    """Write ``frame`` as CSV at ``data_root/relative`` atomically and record its SHA-256 in ``report``.

    An existing file with different content is kept unless ``overwrite``: an import never silently replaces a
    table a lab may have edited.
    """
    path = data_root / relative
    text = frame.to_csv(index=False, lineterminator="\n")
    digest = hashlib.sha256(text.encode()).hexdigest()
    if path.exists() and not overwrite:
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise InputError(f"{path}: exists with different content; pass --overwrite to replace it, or import "
                             "into another --data-root")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    report.written[relative] = digest
    return path
