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

from gpfm.extract.layout import JobLayout, guard_tiling_config
from gpfm.extract.locks import DEFAULT_TTL_S, break_stale_lock, lock_path_for, remove_stale_temps, try_acquire
from gpfm.extract.progress import Progress
from gpfm.extract.sharding import BYTES_PER_TILE_ESTIMATE, ShardSpec, local_device_from_env, plan_order, shard_from_env
from gpfm.extract.slide import (
    DEFAULT_MAX_FAILED_FRACTION,
    SegmentationSettings,
    embed_slide,
    empty_result,
    prepare_grid,
    write_slide_features,
)
from gpfm.extract.slides import SlideEntry, collect_slides
from gpfm.extract.state import (
    SlideState,
    load_all_states,
    load_state,
    new_run_id,
    one_line,
    save_state,
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

    @property
    def failures(self) -> list[SlideState]:
        """Slides that failed in this run (or earlier, and were not retried)."""
        return [s for s in self.slides if s.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return not self.failures

    @property
    def tiles_per_s(self) -> float:
        """Tiles embedded per second of wall time."""
        return self.n_tiles / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Ctx:
    layout: JobLayout
    encoder: Any
    tiling: Any
    segmentation: SegmentationSettings
    tiling_sha: str
    run_id: str
    run_started: str
    batch_size: int
    workers: int
    block_k: int
    overwrite: bool
    retry_failed: bool
    lock_ttl_s: float
    max_failed_fraction: float
    thumbnail_px: int
    progress: Progress
    writer: AsyncWriter


def _cost_of(entry: SlideEntry, layout: JobLayout, fov_um: float) -> float:
    """Estimated tiles: coordinates when present, else tissue area / FOV², else file size."""
    from gpfm.wsi import open_h5

    patches = layout.patches(entry.slide_id)
    if patches.is_file():
        try:
            with open_h5(patches) as h5:
                return float(h5["coords"].shape[0])
        except Exception:  # noqa: BLE001 - unreadable: fall through to the next estimate
            pass
    geo = layout.contours_geojson(entry.slide_id)
    if geo.is_file():
        import json

        try:
            feats = json.loads(geo.read_text()).get("features", [])
            area = sum(float(f.get("properties", {}).get("area_um2", 0.0)) for f in feats)
            return area / (fov_um * fov_um)
        except (ValueError, TypeError, AttributeError):
            pass
    try:
        return entry.path.stat().st_size / BYTES_PER_TILE_ESTIMATE
    except OSError:
        return 0.0


def _finish(ctx: _Ctx, state: SlideState, t0: float, lock: Any) -> SlideState:
    state.seconds = time.perf_counter() - t0
    state.tiles_per_s = state.n_tiles / state.seconds if state.seconds > 0 else 0.0
    state.run_id = ctx.run_id
    save_state(ctx.layout.state_dir, state)
    if lock is not None:
        lock.release()
    ctx.progress.end_slide(state.slide_id, state.status, state.n_tiles, state.seconds)
    return state


def _fail(ctx: _Ctx, state: SlideState, exc: BaseException, t0: float, lock: Any) -> SlideState:
    state.status = "failed"
    state.error_class = type(exc).__name__
    state.error = one_line(exc)
    name = Path(state.slide_path).name
    if name not in state.error:  # a decoder message alone ("Not a JPEG file") does not say which slide
        state.error = f"{name}: {state.error}"
    log.error("%s: failed at stage %s: %s: %s", state.slide_id, state.stage, state.error_class, state.error)
    return _finish(ctx, state, t0, lock)


@dataclass
class _Prepared:
    """A locked slide with its grid, ready to embed."""

    entry: SlideEntry
    state: SlideState
    lock: Any
    slide: Any
    grid: Any
    t0: float


def _prepare(entry: SlideEntry, ctx: _Ctx) -> tuple[str, Any]:
    """Decide, lock, open and tile one slide (runs one slide ahead of the encoder, on the preparer thread).

    Returns:
        ``("ready", _Prepared)``; ``("processed", state)`` when it failed here; ``("skipped", state)`` when it is
        already complete; ``("failed_earlier", state)`` for a slide that failed before this run started (without
        ``retry_failed``); or ``("held", None)`` when another process holds it or finished / failed it during
        this run.
    """
    from gpfm.wsi import is_complete, open_slide

    final = ctx.layout.features(entry.slide_id)
    weights_sha = ctx.encoder.weights_sha256
    previous = load_state(ctx.layout.state_dir, entry.slide_id)
    if not ctx.overwrite and is_complete(final, ctx.tiling_sha, weights_sha):
        # a writer killed between the atomic rename and its lock release leaves a complete file + a dead lock
        break_stale_lock(lock_path_for(final), ctx.lock_ttl_s)
        if previous is not None and previous.status in ("done", "empty"):
            return ("held", None) if previous.updated_utc >= ctx.run_started else ("skipped", previous)
        return "skipped", _record_existing(ctx, entry, final)
    if previous is not None and previous.status == "failed" and not ctx.overwrite:
        if previous.updated_utc >= ctx.run_started:
            return "held", None  # failed during this run in another process: one attempt per run
        # a missing mpp that this run now supplies is a fixed input, not a retry the user must ask for
        mpp_now_given = previous.error_class == "MissingMppError" and entry.mpp is not None
        if not ctx.retry_failed and not mpp_now_given:
            return "failed_earlier", previous
    lock = try_acquire(final, ctx.run_id, ttl_s=ctx.lock_ttl_s)
    if lock is None:
        return "held", None
    t0 = time.perf_counter()
    previous = load_state(ctx.layout.state_dir, entry.slide_id)  # another process may have just finished it
    if not ctx.overwrite and is_complete(final, ctx.tiling_sha, weights_sha):
        lock.release()
        return "held", None
    for output in (final, ctx.layout.patches(entry.slide_id)):  # leftovers of a killed writer of this slide
        remove_stale_temps(output, ctx.lock_ttl_s)
    state = SlideState(entry.slide_id, str(entry.path), status="running", stage="open",
                       attempts=(previous.attempts if previous else 0) + 1, encoder=ctx.encoder.name,
                       tiling_config_sha256=ctx.tiling_sha, weights_sha256=weights_sha, run_id=ctx.run_id)
    slide = None
    try:
        save_state(ctx.layout.state_dir, state)
        slide = open_slide(entry.path, mpp=entry.mpp, mpp_source=entry.mpp_source, slide_id=entry.slide_id)
        state.mpp, state.mpp_source = slide.mpp, slide.mpp_source
        state.stage = "tile"
        grid, _ = prepare_grid(slide, ctx.layout, ctx.tiling, ctx.segmentation, ctx.tiling_sha,
                               overwrite=ctx.overwrite, thumbnail_px=ctx.thumbnail_px)
    except BaseException as exc:  # noqa: BLE001 - one slide's failure must not stop the batch
        if slide is not None:
            slide.close()
        return "processed", _fail(ctx, state, exc, t0, lock)
    slide.close()  # the embedding stage reopens it lazily (in its reader workers)
    return "ready", _Prepared(entry, state, lock, slide, grid, t0)


def _abandon(prepared: _Prepared, ctx: _Ctx) -> None:
    """Release a prepared slide that will not be embedded in this run (early stop or interruption)."""
    prepared.state.status, prepared.state.stage = "pending", ""
    save_state(ctx.layout.state_dir, prepared.state)
    prepared.lock.release()


def _embed(prepared: _Prepared, ctx: _Ctx) -> tuple[str, SlideState | Future[SlideState]]:
    """Embed a prepared slide and queue its write; the writer thread records the state and releases the lock."""
    entry, state, lock, grid, t0 = prepared.entry, prepared.state, prepared.lock, prepared.grid, prepared.t0
    final = ctx.layout.features(entry.slide_id)
    state.stage = "embed"
    ctx.progress.start_slide(entry.slide_id, len(grid))
    try:
        if len(grid):
            result = embed_slide(prepared.slide, grid, ctx.encoder, batch_size=ctx.batch_size,
                                 workers=ctx.workers, block_k=ctx.block_k, on_batch=ctx.progress.advance_tiles,
                                 max_failed_fraction=ctx.max_failed_fraction)
        else:
            result = empty_result(ctx.encoder)
    except Exception as exc:  # noqa: BLE001 - one slide's failure must not stop the batch
        return "processed", _fail(ctx, state, exc, t0, lock)
    except BaseException:
        lock.release()  # interrupted: leave no lock behind; the state stays "running" (= not done)
        raise
    finally:
        prepared.slide.close()  # release the reader handle before the next slide (memory stays flat)
    state.n_tiles = result.n_tiles
    state.n_failed_tiles = int((result.tile_status == 2).sum())

    def write() -> SlideState:
        try:
            state.stage = "write"
            write_slide_features(final, grid, ctx.encoder, result, run_id=ctx.run_id)
            state.stage, state.status = "done", "done" if result.n_tiles else "empty"
            state.outputs = {"features": {"path": str(final), "bytes": final.stat().st_size},
                             "patches": {"path": str(ctx.layout.patches(entry.slide_id))}}
            return _finish(ctx, state, t0, lock)
        except BaseException as exc:  # noqa: BLE001 - recorded, then reported by the caller
            return _fail(ctx, state, exc, t0, lock)

    return "processed", ctx.writer.submit(write)


def _record_existing(ctx: _Ctx, entry: SlideEntry, final: Path) -> SlideState:
    """A complete output without a matching state file (e.g. copied in): record it as done."""
    state = SlideState(entry.slide_id, str(entry.path), status="done", stage="done", encoder=ctx.encoder.name,
                       tiling_config_sha256=ctx.tiling_sha, weights_sha256=ctx.encoder.weights_sha256,
                       outputs={"features": {"path": str(final), "bytes": final.stat().st_size}}, run_id=ctx.run_id)
    save_state(ctx.layout.state_dir, state)
    return state


def _entries(slides: Any, mpp: float | None, recursive: bool) -> list[SlideEntry]:
    """SlideEntry items as given, plus paths / folders / manifests expanded (ids must stay unique)."""
    from gpfm.extract.slides import SlideListError

    items = [slides] if isinstance(slides, (str, os.PathLike, SlideEntry)) else list(slides)
    given = [s for s in items if isinstance(s, SlideEntry)]
    paths = [s for s in items if not isinstance(s, SlideEntry)]
    entries = given + (collect_slides(paths, mpp=mpp, recursive=recursive) if paths else [])
    ids = [e.slide_id for e in entries]
    if len(set(ids)) != len(ids):
        raise SlideListError("duplicate slide ids between the given entries and paths; ids must be unique")
    if not entries:
        raise SlideListError("no slides given; pass slide files, a folder or a CSV manifest")
    return entries


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
) -> RunSummary:
    """Embed every tissue tile of every slide with a registered encoder; one HDF5 file per slide.

    Args:
        slides: slide files, folders, CSV manifests (``slide_id,path[,mpp]``) or :class:`SlideEntry` items.
        encoder: registered encoder name (``gpfm models`` lists them).
        out_dir: the job directory (layout in :mod:`gpfm.extract.layout`).
        weights: weights file, ``"random"`` (timing/tests), or None to search the usual places.
        recipe: tiling recipe (``gpfm-128um`` default: 256 px at 0.5 µm/px, resized by the encoder to 224).
        tiling: an explicit :class:`~gpfm.wsi.TilingConfig` (overrides ``recipe``).
        seg_method: tissue detection method; ``seg_params`` its parameters.
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

    started, t_start = utc_now(), time.perf_counter()
    entries = _entries(slides, mpp, recursive)
    if isinstance(shard, ShardSpec):
        spec = shard
    else:
        spec = parse_shard(shard) if shard else shard_from_env()
    tiling_cfg, segmentation, tiling_sha, tiling_config = resolve_tiling(recipe, tiling, seg_method, seg_params)
    enc = create_encoder(encoder, weights, device=device or local_device_from_env(), precision=precision)
    batch_size = batch_size or (256 if enc.device.type == "cuda" else 32)
    layout = JobLayout(Path(out_dir), tiling_cfg.dir_name(), enc.name)
    guard_tiling_config(layout, tiling_config, tiling_sha, force=force)
    run_id = new_run_id()
    by_id = {e.slide_id: e for e in entries}
    fov = tiling_cfg.tile_px * (tiling_cfg.target_mpp or 0.5)
    own, stolen = plan_order(list(by_id), lambda s: _cost_of(by_id[s], layout, fov), spec, steal=steal)
    summary = RunSummary(run_id, layout.root, enc.name, f"{spec} ({spec.source})", encoder_metadata=enc.metadata())
    bar = Progress(len(own), enabled=progress)
    outcomes: list[tuple[str, SlideState | Future[SlideState]]] = []
    held = 0
    last_summary = time.perf_counter()
    ctx = _Ctx(layout, enc, tiling_cfg, segmentation, tiling_sha, run_id, started, batch_size,
               default_workers() if workers is None else workers, block_k, overwrite, retry_failed, lock_ttl_s,
               max_failed_fraction, thumbnail_px, bar, AsyncWriter())
    order = [by_id[sid] for sid in (*own, *stolen)]
    # the preparer thread locks, opens and tiles slide s+1 while slide s is being embedded (no idle encoder)
    preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpfm-prepare")
    pending: Future[tuple[str, Any]] | None = None
    try:
        for position in range(len(order)):
            if pending is None:
                pending = preparer.submit(_prepare, order[position], ctx)
            kind, value = pending.result()
            pending = preparer.submit(_prepare, order[position + 1], ctx) if position + 1 < len(order) else None
            if kind == "ready":
                kind, value = _embed(value, ctx)
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
                _abandon(value, ctx)
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
    summary.n_tiles = sum(s.n_tiles for s in summary.slides if s.run_id == run_id and s.status == "done")
    summary.seconds = time.perf_counter() - t_start
    write_summary_csv(layout.summary_csv, load_all_states(layout.state_dir))
    summary.summary_csv = layout.summary_csv
    summary.record_path = layout.run_record(run_id)
    write_run_record(summary.record_path, {
        "run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "shard": summary.shard,
        "started_utc": started, "finished_utc": utc_now(), "seconds": round(summary.seconds, 3),
        "n_slides_listed": len(entries), "n_own": len(own), "counts": summary.counts, "n_tiles": summary.n_tiles,
        "tiles_per_s": round(summary.tiles_per_s, 2), "encoder": summary.encoder_metadata,
        "tiling_config_sha256": tiling_sha, "tiling_config": tiling_config,
        "failures": [{"slide_id": s.slide_id, "error_class": s.error_class, "error": s.error}
                     for s in summary.failures],
        "slides": [asdict(s) for s in summary.slides], "machine": machine_info(),
    })
    if not skip_errors and summary.failures:
        f = summary.failures[0]
        raise RuntimeError(f"{f.slide_id}: {f.error_class}: {f.error} (recorded in {summary.record_path})")
    return summary
