"""``extract_slides``: many slides → one features file each, resumable, sharded, never losing or faking work.

For each slide this process owns (LPT share first, then — with work stealing — pending slides of other shards;
steps 1–3a run one slide ahead on a preparer thread, so the encoder does not wait for tissue detection):

1. skip when ``features_<encoder>/<slide>.h5`` is complete for this tiling and these weights;
2. take ``<features>.lock`` (O_EXCL; a live holder elsewhere means skip);
3. run tissue detection + tiling unless complete coordinates exist (3a); embed every tile;
4. hand the features to the async writer, which writes the HDF5 atomically, records ``state/<slide>.json``
   and then releases the lock — while this thread already reads the next slide.

A failing slide is recorded (error class + one-line reason in its state, ``runs/<run_id>.json`` and
``summary.csv``) and the batch goes on (``skip_errors=False`` re-raises after recording).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpfm.errors import DiskFullError, GpfmError
from gpfm.extract.layout import JobLayout, guard_tiling_config
from gpfm.extract.locks import DEFAULT_TTL_S
from gpfm.extract.pipeline import JobContext, abandon, cost_of, embed, prepare
from gpfm.extract.progress import Progress
from gpfm.extract.sharding import ShardSpec, local_device_from_env, plan_order, shard_from_env
from gpfm.extract.slide import DEFAULT_MAX_FAILED_FRACTION
from gpfm.extract.slides import SlideEntry, collect_slides
from gpfm.extract.state import (
    SlideState,
    load_all_states,
    new_run_id,
    utc_now,
    write_run_record,
    write_summary_csv,
)
from gpfm.extract.writer import AsyncWriter

log = logging.getLogger(__name__)

SUMMARY_EVERY_S = 60.0


@dataclass
class RunSummary:
    """What one ``extract_slides`` call did.

    Attributes:
        run_id: this run's id (``runs/<run_id>.json``).
        out_dir: the job directory.
        encoder: encoder name; ``encoder_metadata`` its full record.
        shard: ``i/n`` and where it came from.
        slides: this run's per-slide outcomes (states), in processing order.
        counts: status → number of slides this run touched (done, skipped, failed, empty, held).
        n_tiles: tiles embedded by this run.
        seconds: wall time.
        record_path: the run record JSON.
        summary_csv: the job's summary table.
        stopped: why the batch stopped before its last slide (e.g. disk full), or "" when it ran to the end.
        skipped_files: (path, reason) of files in the given folders that are not slides.
    """

    run_id: str
    out_dir: Path
    encoder: str
    shard: str
    slides: list[SlideState] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    n_tiles: int = 0
    seconds: float = 0.0
    encoder_metadata: dict[str, Any] = field(default_factory=dict)
    record_path: Path | None = None
    summary_csv: Path | None = None
    stopped: str = ""
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failures(self) -> list[SlideState]:
        """Slides that failed in this run (or earlier, and were not retried)."""
        return [s for s in self.slides if s.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when no slide failed and the batch was not stopped."""
        return not self.failures and not self.stopped

    @property
    def stopped_by_environment(self) -> bool:
        """True when the batch stopped because the machine failed (disk full), not the slides."""
        return is_disk_full_text(self.stopped)

    @property
    def tiles_per_s(self) -> float:
        """Tiles embedded per second of wall time."""
        return self.n_tiles / self.seconds if self.seconds > 0 else 0.0


class ExtractOptionError(GpfmError, ValueError):
    """An option of ``extract_slides`` is outside its range; raised before any slide is touched."""


def check_options(*, batch_size: int | None, workers: int | None, block_k: int, lock_ttl_s: float,
                  max_failed_fraction: float, thumbnail_px: int) -> None:
    """Refuse impossible options up front, so a typo never marks every slide failed."""
    problems = []
    if batch_size is not None and batch_size < 1:
        problems.append(f"--batch-size {batch_size} must be ≥ 1")
    if workers is not None and not 0 <= workers <= 256:
        problems.append(f"--workers {workers} must be between 0 and 256")
    if not 1 <= block_k <= 64:
        problems.append(f"--block-k {block_k} must be between 1 and 64")
    if not lock_ttl_s > 0:
        problems.append(f"lock_ttl_s {lock_ttl_s} must be > 0")
    if not 0.0 <= max_failed_fraction <= 1.0:
        problems.append(f"max_failed_fraction {max_failed_fraction} must be in [0, 1]")
    if not 16 <= thumbnail_px <= 16384:
        problems.append(f"thumbnail_px {thumbnail_px} must be between 16 and 16384")
    if problems:
        raise ExtractOptionError("; ".join(problems) + "; nothing was run")


def _entries(slides: Any, mpp: float | None, recursive: bool, skipped: list | None = None) -> list[SlideEntry]:
    """SlideEntry items as given, plus paths / folders / manifests expanded (ids must stay unique)."""
    from gpfm.extract.slides import SlideListError, check_slide_id

    items = [slides] if isinstance(slides, (str, os.PathLike, SlideEntry)) else list(slides)
    given = [s for s in items if isinstance(s, SlideEntry)]
    for entry in given:
        check_slide_id(entry.slide_id, f"SlideEntry for {entry.path}")
    paths = [s for s in items if not isinstance(s, SlideEntry)]
    entries = given + (collect_slides(paths, mpp=mpp, recursive=recursive, skipped=skipped) if paths else [])
    ids = [e.slide_id for e in entries]
    if len(set(ids)) != len(ids):
        raise SlideListError("duplicate slide ids between the given entries and paths; ids must be unique")
    if not entries:
        raise SlideListError("no slides given; pass slide files, a folder or a CSV manifest")
    return entries


def is_disk_full_text(message: str) -> bool:
    """True for a stop reason that came from a full disk."""
    return message.startswith("no space left on")


def extract_slides(
    slides: Sequence[str | os.PathLike[str] | SlideEntry] | str | os.PathLike[str],
    encoder: str = "gpfm",
    out_dir: str | os.PathLike[str] = "gpfm_job",
    *,
    weights: str | os.PathLike[str] | None = None,
    recipe: str = "gpfm-128um",
    tiling: Any = None,
    seg_method: str = "hsv",
    seg_params: dict[str, Any] | None = None,
    mpp: float | None = None,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    block_k: int = 4,
    shard: ShardSpec | str | None = None,
    steal: bool = True,
    overwrite: bool = False,
    retry_failed: bool = False,
    skip_errors: bool = True,
    force: bool = False,
    lock_ttl_s: float = DEFAULT_TTL_S,
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
    thumbnail_px: int = 1024,
    progress: bool | None = None,
    recursive: bool = False,
    qc: str = "standard",
) -> RunSummary:
    """Embed every tissue tile of every slide with a registered encoder; one HDF5 file per slide.

    Args:
        slides: slide files, folders, CSV manifests (``slide_id,path[,mpp]``) or :class:`SlideEntry` items.
        encoder: registered encoder name (``gpfm models`` lists them).
        out_dir: the job directory (layout in :mod:`gpfm.extract.layout`).
        weights: weights file, ``"random"`` (timing/tests), or None to search the usual places.
        recipe: tiling recipe (``gpfm-128um`` default: 256 px at 0.5 µm/px, resized by the encoder to 224).
        tiling: an explicit :class:`~gpfm.wsi.TilingConfig` (overrides ``recipe``).
        seg_method: tissue detection method (``hsv``, ``otsu``, ``clam-tcga``, ``geojson``).
        seg_params: overrides of the method's preset (fields of :class:`gpfm.wsi.tissue.TissueParams`).
        mpp: µm/px override for slides without a manifest mpp (recorded as ``cli_override``).
        device: ``cpu``/``cuda``/``cuda:1``; None = ``cuda:$LOCAL_RANK`` under torchrun, else CUDA if present.
        precision: ``fp32``/``bf16``/``fp16``; None = the encoder's hardware default.
        batch_size: most tiles per encoder batch; None = 256 on CUDA, 32 on CPU.
        workers: reader processes; None = 0.75 × cores.
        block_k: read k×k blocks of neighbouring tiles with one region read.
        shard: ``ShardSpec``, ``"I/N"``, or None to read torchrun / Slurm-array variables.
        steal: after this shard's own slides, take pending unlocked slides of other shards.
        overwrite: redo slides that are already complete (coordinates and features).
        retry_failed: retry slides that failed in earlier runs (by default they stay failed and are skipped).
        skip_errors: record a failing slide and go on (False: record, then raise).
        force: replace a different recorded tiling configuration in this job directory.
        lock_ttl_s: a lock whose heartbeat is older than this is stale.
        max_failed_fraction: fail a slide when more of its tiles than this were unreadable.
        thumbnail_px: longest side of thumbnails.
        progress: show progress bars (None: only on a terminal).
        recursive: scan folders recursively.
        qc: tile QC preset (:mod:`gpfm.wsi.qc`): ``standard`` (default: pen ink removed from the tissue mask,
            ink- and black-dominated tiles excluded and listed), ``strict`` (also background and blur), ``off``.

    Returns:
        The :class:`RunSummary` (also written to ``runs/<run_id>.json``; ``summary.csv`` covers the whole job).

    Raises:
        SlideListError: bad slide list; TilingConfigMismatchError: the job folder holds another configuration;
        any slide error when ``skip_errors`` is False.
    """
    from gpfm.extract.dataset import default_workers
    from gpfm.extract.sharding import parse_shard
    from gpfm.extract.tiling_setup import resolve_tiling
    from gpfm.models import create_encoder
    from gpfm.runtime import machine_info
    from gpfm.wsi.qc import qc_preset

    started, t_start = utc_now(), time.perf_counter()
    check_options(batch_size=batch_size, workers=workers, block_k=block_k, lock_ttl_s=lock_ttl_s,
                  max_failed_fraction=max_failed_fraction, thumbnail_px=thumbnail_px)
    skipped_files: list = []
    entries = _entries(slides, mpp, recursive, skipped_files)
    if isinstance(shard, ShardSpec):
        spec = shard
    else:
        spec = parse_shard(shard) if shard else shard_from_env()
    qc_params = qc_preset(qc)
    if qc_params is not None and qc_params.remove_pen and seg_method != "geojson":
        seg_params = {"remove_pen": True, **(seg_params or {})}  # the caller's explicit choice wins
    tiling_cfg, segmentation, tiling_sha, tiling_config = resolve_tiling(recipe, tiling, seg_method, seg_params)
    enc = create_encoder(encoder, weights, device=device or local_device_from_env(), precision=precision)
    batch_size = batch_size or (256 if enc.device.type == "cuda" else 32)
    layout = JobLayout(Path(out_dir), tiling_cfg.dir_name(), enc.name)
    guard_tiling_config(layout, tiling_config, tiling_sha, force=force)
    run_id = new_run_id()
    by_id = {e.slide_id: e for e in entries}
    fov = tiling_cfg.tile_px * (tiling_cfg.target_mpp or 0.5)
    own, stolen = plan_order(list(by_id), lambda s: cost_of(by_id[s], layout, fov), spec, steal=steal)
    summary = RunSummary(run_id, layout.root, enc.name, f"{spec} ({spec.source})", encoder_metadata=enc.metadata(),
                         skipped_files=[(str(f.path), f.reason) for f in skipped_files])
    bar = Progress(len(own), enabled=progress)
    outcomes: list[tuple[str, SlideState | Future[SlideState]]] = []
    held = 0
    last_summary = time.perf_counter()
    ctx = JobContext(layout, enc, tiling_cfg, segmentation, tiling_sha, run_id, started, batch_size,
               default_workers() if workers is None else workers, block_k, overwrite, retry_failed, lock_ttl_s,
               max_failed_fraction, thumbnail_px, bar, AsyncWriter(), qc=qc_params)
    order = [by_id[sid] for sid in (*own, *stolen)]
    # the preparer thread locks, opens and tiles slide s+1 while slide s is being embedded (no idle encoder)
    preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpfm-prepare")
    pending: Future[tuple[str, Any]] | None = None
    try:
        for position in range(len(order)):
            if ctx.stop_reason:
                break  # e.g. disk full: every later slide would fail the same way
            if pending is None:
                pending = preparer.submit(prepare, order[position], ctx)
            kind, value = pending.result()
            pending = preparer.submit(prepare, order[position + 1], ctx) if position + 1 < len(order) else None
            if kind == "ready":
                kind, value = embed(value, ctx)
            if value is None:
                held += 1
                continue
            outcomes.append((kind, value))
            if not skip_errors and isinstance(value, SlideState) and value.status == "failed":
                break
            if time.perf_counter() - last_summary > SUMMARY_EVERY_S:
                write_summary_csv(layout.summary_csv, load_all_states(layout.state_dir))
                last_summary = time.perf_counter()
    finally:
        if pending is not None:  # stopped early: hand back the slide prepared ahead
            kind, value = pending.result()
            if kind == "ready":
                abandon(value, ctx)
            elif value is not None:
                outcomes.append((kind, value))
        preparer.shutdown()
        ctx.writer.close()
        bar.close()
    for kind, outcome in outcomes:
        state = outcome.result() if isinstance(outcome, Future) else outcome
        summary.slides.append(state)
        key = state.status if kind == "processed" else kind
        summary.counts[key] = summary.counts.get(key, 0) + 1
    if held:
        summary.counts["held_elsewhere"] = held
    if ctx.stop_reason:
        summary.stopped = ctx.stop_reason[0]
        log.error("batch stopped: %s", summary.stopped)
    summary.n_tiles = sum(s.n_tiles for s in summary.slides if s.run_id == run_id and s.status == "done")
    summary.seconds = time.perf_counter() - t_start
    try:
        write_summary_csv(layout.summary_csv, load_all_states(layout.state_dir))
        summary.summary_csv = layout.summary_csv
    except DiskFullError as exc:
        summary.stopped = summary.stopped or str(exc)
    summary.record_path = layout.run_record(run_id)
    record = {
        "run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "shard": summary.shard,
        "started_utc": started, "finished_utc": utc_now(), "seconds": round(summary.seconds, 3),
        "n_slides_listed": len(entries), "n_own": len(own), "counts": summary.counts, "n_tiles": summary.n_tiles,
        "tiles_per_s": round(summary.tiles_per_s, 2), "encoder": summary.encoder_metadata,
        "tiling_config_sha256": tiling_sha, "tiling_config": tiling_config,
        "qc": None if qc_params is None else qc_params.to_dict(),
        "skipped_files": [{"path": p, "reason": r} for p, r in summary.skipped_files],
        "failures": [{"slide_id": s.slide_id, "error_class": s.error_class, "error": s.error}
                     for s in summary.failures],
        "slides": [asdict(s) for s in summary.slides], "machine": machine_info(), "stopped": summary.stopped,
    }
    try:
        write_run_record(summary.record_path, record)
    except DiskFullError as exc:
        summary.stopped = summary.stopped or str(exc)
        summary.record_path = None
    if not skip_errors and summary.failures:
        f = summary.failures[0]
        raise RuntimeError(f"{f.slide_id}: {f.error_class}: {f.error} (recorded in {summary.record_path})")
    return summary
