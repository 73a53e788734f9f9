"""Per-slide state files, run records and the job summary — what happened to every slide, written atomically.

``state/<slide>.json`` is the durable truth for one slide (status, stage, error, counts, outputs, hashes);
``runs/<run_id>.json`` records one process's run; ``summary.csv`` aggregates all state files and is rebuilt
atomically after every slide, so concurrent workers never leave a torn file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpfm.atomic import write_json_atomic, write_text_atomic

Status = Literal["pending", "running", "done", "failed", "skipped", "empty"]

SUMMARY_COLUMNS = (
    "slide_id", "status", "stage", "n_tiles", "n_failed_tiles", "n_excluded_tiles", "seconds", "tiles_per_s",
    "error_class", "error",
    "features_path", "slide_path", "run_id", "updated_utc",
)


def utc_now() -> str:
    """Current UTC time, ISO-8601 to the millisecond (sortable as text)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """A unique, sortable run id: ``<UTC time>-<host>-<pid>-<rand>``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one readable line (newlines folded, length capped)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class SlideState:
    """Everything recorded about one slide.

    Attributes:
        slide_id: the slide's id.
        slide_path: the slide file.
        status: pending, running, done, failed, skipped (done earlier / held elsewhere) or empty (no tissue tiles).
        stage: the stage reached or failed in: ``open``, ``segment``, ``tile``, ``embed``, ``write``, ``done``.
        error_class: exception class of a failure (e.g. ``MissingMppError``).
        error: one-line reason.
        attempts: how many runs tried this slide.
        n_tiles: tiles embedded.
        n_failed_tiles: tiles that could not be read (white-filled and flagged in ``tile_status``).
        n_excluded_tiles: tiles tile QC kept out of the features (listed in the features file with reasons).
        seconds: wall time of the last attempt.
        tiles_per_s: end-to-end throughput of the last attempt.
        mpp: the µm/px used and ``mpp_source`` where it came from.
        outputs: output name → {path, bytes}.
        tiling_config_sha256: hash of the tiling configuration.
        weights_sha256: hash of the encoder weights.
        encoder: encoder name.
        run_id: the run that wrote this state.
        updated_utc: when.
        slide_fingerprint: ``size:mtime_ns:sha256(head+tail)`` of the slide file this state describes.
        note: a remark on the last attempt (e.g. "slide file changed since the previous outputs; redone").
    """

    slide_id: str
    slide_path: str
    status: Status = "pending"
    stage: str = ""
    error_class: str = ""
    error: str = ""
    attempts: int = 0
    n_tiles: int = 0
    n_failed_tiles: int = 0
    n_excluded_tiles: int = 0
    seconds: float = 0.0
    tiles_per_s: float = 0.0
    mpp: float | None = None
    mpp_source: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    tiling_config_sha256: str = ""
    weights_sha256: str = ""
    encoder: str = ""
    run_id: str = ""
    updated_utc: str = ""
    slide_fingerprint: str = ""
    note: str = ""

    def to_row(self) -> dict[str, Any]:
        """The summary.csv row."""
        row = {k: v for k, v in asdict(self).items() if k in SUMMARY_COLUMNS}
        row["features_path"] = self.outputs.get("features", {}).get("path", "")
        row["seconds"] = f"{self.seconds:.2f}"
        row["tiles_per_s"] = f"{self.tiles_per_s:.1f}"
        return row


def state_path(state_dir: Path, slide_id: str) -> Path:
    """``state/<slide>.json``."""
    from gpfm.extract.slides import check_slide_id

    return state_dir / f"{check_slide_id(slide_id, 'state file')}.json"


def load_state(state_dir: Path, slide_id: str) -> SlideState | None:
    """The recorded state of a slide, or None when there is none (or it is unreadable)."""
    path = state_path(state_dir, slide_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = SlideState.__dataclass_fields__
        return SlideState(**{k: v for k, v in data.items() if k in known})
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError):
        return None  # missing or damaged (e.g. hand-edited): treated as "no record", so the slide is redone


def save_state(state_dir: Path, state: SlideState) -> None:
    """Write a slide's state atomically (stamping ``updated_utc``)."""
    state.updated_utc = utc_now()
    write_json_atomic(state_path(state_dir, state.slide_id), asdict(state))


def load_all_states(state_dir: Path) -> list[SlideState]:
    """All readable state files, sorted by slide id."""
    if not state_dir.is_dir():
        return []
    from gpfm.extract.slides import slide_id_problem

    states = [load_state(state_dir, p.stem) for p in sorted(state_dir.glob("*.json"))
              if slide_id_problem(p.stem) is None]
    return [s for s in states if s is not None]


def write_summary_csv(path: Path, states: list[SlideState]) -> None:
    """Write ``summary.csv`` (one row per slide) atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for s in sorted(states, key=lambda s: s.slide_id):
        writer.writerow(s.to_row())
    write_text_atomic(path, buf.getvalue())


def read_summary_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a ``summary.csv``."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_run_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``runs/<run_id>.json`` atomically."""
    write_json_atomic(path, record)
