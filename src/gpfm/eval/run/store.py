"""The on-disk store of a benchmark run: run keys, reuse, atomic replacement and failure records.

``<out>/runs/<task>/<protocol>/<encoder>/`` holds ``result.json``, ``run.json`` (the run key, the inputs it
hashes, status, wall time) and, for failures, ``error.txt``. A run folder is only ever replaced as a whole by
rename, so a reader sees either the old or the new result, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpfm.atomic import write_json_atomic, write_text_atomic
from gpfm.eval.protocol import ProtocolResult
from gpfm.eval.run.results import STATUS_OK, ResultRow
from gpfm.hashing import file_digest

log = logging.getLogger(__name__)


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``, the reason recorded in the results table."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical (sorted-key) JSON of ``obj``: the run key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(block: Mapping[str, Any], encoder: str) -> dict[str, Any]:
    """What identifies the data on disk, for the run key.

    Size and mtime of every file the block names; for a folder, a hash of the names, sizes and mtimes of its
    direct entries (so re-extracted features or added images run again).
    """
    prints: dict[str, Any] = {}
    for key, value in block.items():
        if not isinstance(value, str) or key == "kind":
            continue
        path = Path(value.replace("{encoder}", encoder))
        try:
            if path.is_file():
                st = path.stat()
                prints[key] = [st.st_size, st.st_mtime_ns]
            elif path.is_dir():
                digest = hashlib.sha256()
                for entry in sorted(os.scandir(path), key=lambda e: e.name):
                    st = entry.stat()
                    digest.update(f"{entry.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
                prints[key] = digest.hexdigest()
        except OSError:
            continue
    return prints


def load_finished(run_dir: Path, key: str) -> tuple[ProtocolResult, float] | None:
    """The stored result and its original wall time, if it finished with the same run key."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        if meta.get("status") != STATUS_OK or meta.get("run_key") != key:
            return None
        recorded = meta.get("result_sha256")
        if recorded and file_digest(run_dir / "result.json") != recorded:
            log.warning("%s: result.json does not match the checksum recorded with it; running it again", run_dir)
            return None
        return ProtocolResult.load(run_dir / "result.json"), float(meta.get("seconds", 0.0))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def new_staging_dir(run_dir: Path) -> Path:
    """A fresh, uniquely named sibling of ``run_dir`` to run a protocol in (safe for concurrent runners)."""
    staging = run_dir.with_name(f"{run_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    return staging


def swap_in(staging: Path, run_dir: Path) -> None:
    """Replace ``run_dir`` by ``staging`` with renames, so a reader never sees half of either."""
    old = run_dir.with_name(f"{run_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        run_dir.rename(old)
    staging.rename(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def record_failure(
    run_dir: Path, key: str, inputs: dict[str, Any], row: ResultRow, err: BaseException
) -> None:
    """Replace ``run_dir`` by a failure record: ``run.json`` (status, reason, key) and the traceback."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "error.txt", "".join(traceback.format_exception(err)))
    write_json_atomic(
        run_dir / "run.json", {"run_key": key, "inputs": inputs, "status": row.status, "reason": row.reason}
    )
