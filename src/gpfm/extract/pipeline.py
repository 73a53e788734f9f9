"""The per-slide steps of a job: decide, lock, open + tile (``prepare``), embed, and record.

``prepare`` runs one slide ahead of the encoder on a preparer thread; ``embed`` runs on the main thread and
hands the features to the async writer, which writes the HDF5 file atomically, records the slide's state and
only then releases the slide's lock. Any failure is recorded with its class and a one-line reason naming the
slide file, and the lock is released.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpfm.errors import DiskFullError, disk_full_message, is_disk_full
from gpfm.extract.layout import JobLayout
from gpfm.extract.locks import break_stale_lock, lock_path_for, remove_stale_temps, try_acquire
from gpfm.extract.progress import Progress
from gpfm.extract.sharding import BYTES_PER_TILE_ESTIMATE
from gpfm.extract.slide import (
    SegmentationSettings,
    embed_slide,
    empty_result,
    prepare_grid,
    split_by_qc,
    write_qc_overlay,
    write_slide_features,
)
from gpfm.extract.slides import SlideEntry
from gpfm.extract.state import SlideState, load_state, one_line, save_state
from gpfm.extract.writer import AsyncWriter
from gpfm.wsi.readers.slide import file_fingerprint, identity_file, same_slide_content

log = logging.getLogger(__name__)


#: Failures that belong to the slide file itself: they stay failed on reruns until ``--retry-failed``.
#: Any other failure (disk full, bad option, interruption, a bug) did not come from the slide and is retried.
SLIDE_INTRINSIC_ERRORS = frozenset({
    "UnsupportedSlideError", "TruncatedSlideError", "UnreadableSlideError", "SlideReadError", "MissingMppError",
    "TilingError", "FileNotFoundError",
})


def failure_sticks(previous: SlideState, entry: SlideEntry) -> bool:
    """True when an earlier failure should be kept (not retried) for this run's ``entry``."""
    if previous.error_class not in SLIDE_INTRINSIC_ERRORS:
        return False  # environment, options or a bug: the slide itself is not at fault
    if previous.error_class == "MissingMppError" and entry.mpp is not None:
        return False  # a missing mpp that this run now supplies is a fixed input
    if previous.slide_fingerprint and not same_slide_content(previous.slide_fingerprint, entry.path):
        return False  # the file was replaced (e.g. re-exported after a truncation): try the new one
    return True


@dataclass
class JobContext:
    """Everything the per-slide steps of one run share."""

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
    stop_reason: list[str] = field(default_factory=list)  # set when the batch must stop (e.g. disk full)
    qc: Any = None  # gpfm.wsi.qc.QCParams, or None when QC is off

    @property
    def qc_json(self) -> str:
        """The QC configuration as recorded in every features file (``off`` when QC is off)."""
        import json

        return "off" if self.qc is None else json.dumps(self.qc.to_dict(), sort_keys=True)


def cost_of(entry: SlideEntry, layout: JobLayout, fov_um: float) -> float:
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


def finish_slide(ctx: JobContext, state: SlideState, t0: float, lock: Any) -> SlideState:
    """Stamp timing, save the state, release the lock (always, even when the state cannot be saved), report."""
    state.seconds = time.perf_counter() - t0
    state.tiles_per_s = state.n_tiles / state.seconds if state.seconds > 0 else 0.0
    state.run_id = ctx.run_id
    try:
        save_state(ctx.layout.state_dir, state)
    except DiskFullError as exc:  # the state stays "running" on disk = not done; the next run redoes it
        log.error("%s: cannot record state: %s", state.slide_id, exc)
        if not ctx.stop_reason:
            ctx.stop_reason.append(str(exc))
    finally:
        if lock is not None:
            lock.release()
    ctx.progress.end_slide(state.slide_id, state.status, state.n_tiles, state.seconds)
    return state


def fail_slide(ctx: JobContext, state: SlideState, exc: BaseException, t0: float, lock: Any) -> SlideState:
    """Record a failure (class + one-line reason naming the slide file) and release the lock."""
    if is_disk_full(exc) and not isinstance(exc, DiskFullError):
        exc = DiskFullError(disk_full_message(ctx.layout.features(state.slide_id)))
    if isinstance(exc, DiskFullError) and not ctx.stop_reason:
        ctx.stop_reason.append(str(exc))  # every later slide would fail the same way: stop the batch
    state.status = "failed"
    state.error_class = type(exc).__name__
    state.error = one_line(exc)
    name = Path(state.slide_path).name
    if name not in state.error:  # a decoder message alone ("Not a JPEG file") does not say which slide
        state.error = f"{name}: {state.error}"
    log.error("%s: failed at stage %s: %s: %s", state.slide_id, state.stage, state.error_class, state.error)
    return finish_slide(ctx, state, t0, lock)


@dataclass
class Prepared:
    """A locked slide with its grid, ready to embed."""

    entry: SlideEntry
    state: SlideState
    lock: Any
    slide: Any
    grid: Any
    t0: float


def _finished_during_this_run(previous: SlideState | None, ctx: JobContext) -> bool:
    """True when another process finished the slide after this run started (so this run must not redo it)."""
    return (previous is not None and previous.status in ("done", "empty") and previous.run_id != ctx.run_id
            and previous.updated_utc >= ctx.run_started)


def prepare(entry: SlideEntry, ctx: JobContext) -> tuple[str, Any]:
    """Decide, lock, open and tile one slide (runs one slide ahead of the encoder, on the preparer thread).

    Returns:
        ``("ready", Prepared)``; ``("processed", state)`` when it failed here; ``("skipped", state)`` when it is
        already complete; ``("failed_earlier", state)`` for a slide that failed before this run started (without
        ``retry_failed``); or ``("held", None)`` when another process holds it or finished / failed it during
        this run.
    """
    from gpfm.wsi import is_complete, open_slide

    final = ctx.layout.features(entry.slide_id)
    weights_sha = ctx.encoder.weights_sha256
    previous = load_state(ctx.layout.state_dir, entry.slide_id)
    if _finished_during_this_run(previous, ctx):
        return "held", None  # another worker of this job did it (also under --overwrite: once per run)
    changed = _slide_changed(entry, ctx)
    overwrite = ctx.overwrite or changed
    qc_changed = final.is_file() and _recorded_qc(final) != ctx.qc_json  # features only: coordinates stay
    if not overwrite and not qc_changed and is_complete(final, ctx.tiling_sha, weights_sha):
        # a writer killed between the atomic rename and its lock release leaves a complete file + a dead lock
        lock_file = lock_path_for(final)
        break_stale_lock(lock_file, ctx.lock_ttl_s)
        if lock_file.exists():
            return "held", None  # a live writer renamed the file and is still recording it: it is theirs
        if previous is not None and previous.status in ("done", "empty"):
            return ("held", None) if previous.updated_utc >= ctx.run_started else ("skipped", previous)
        return "skipped", record_existing(ctx, entry, final)
    if previous is not None and previous.status == "failed" and not ctx.overwrite:
        if previous.updated_utc >= ctx.run_started:
            return "held", None  # failed during this run in another process: one attempt per run
        if not ctx.retry_failed and failure_sticks(previous, entry):
            return "failed_earlier", previous
    lock = try_acquire(final, ctx.run_id, ttl_s=ctx.lock_ttl_s)
    if lock is None:
        return "held", None
    t0 = time.perf_counter()
    previous = load_state(ctx.layout.state_dir, entry.slide_id)  # another process may have just finished it
    if _finished_during_this_run(previous, ctx) or (
            not overwrite and not qc_changed and is_complete(final, ctx.tiling_sha, weights_sha)):
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
        state.slide_fingerprint = file_fingerprint(identity_file(entry.path))
        if changed:
            log.warning("%s: %s changed since its outputs were made (size or content); redoing it",
                        entry.slide_id, entry.path)
            state.note = "slide file changed since the previous outputs; redone"
        slide = open_slide(entry.path, mpp=entry.mpp, mpp_source=entry.mpp_source, slide_id=entry.slide_id)
        state.mpp, state.mpp_source = slide.mpp, slide.mpp_source
        state.stage = "tile"
        grid, _ = prepare_grid(slide, ctx.layout, ctx.tiling, ctx.segmentation, ctx.tiling_sha,
                               overwrite=overwrite, thumbnail_px=ctx.thumbnail_px)
    except BaseException as exc:  # noqa: BLE001 - one slide's failure must not stop the batch
        if slide is not None:
            slide.close()
        return "processed", fail_slide(ctx, state, exc, t0, lock)
    slide.close()  # the embedding stage reopens it lazily (in its reader workers)
    return "ready", Prepared(entry, state, lock, slide, grid, t0)


def _recorded_qc(features: Path) -> str | None:
    """The QC configuration a features file was made with (``off`` for files made before QC existed)."""
    from gpfm.wsi import open_h5

    try:
        with open_h5(features) as h5:
            attrs = h5["features"].attrs
            if attrs.get("qc_preset", "off") in ("off", b"off"):
                return "off"
            value = attrs.get("qc_json", "")
    except Exception:  # noqa: BLE001 - unreadable: is_complete decides
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _slide_changed(entry: SlideEntry, ctx: JobContext) -> bool:
    """True when existing outputs of this slide were made from a different file (replaced under the same name)."""
    from gpfm.wsi.h5io import recorded_slide_fingerprint

    for output in (ctx.layout.features(entry.slide_id), ctx.layout.patches(entry.slide_id)):
        if output.is_file():
            recorded = recorded_slide_fingerprint(output)
            if recorded is not None and not same_slide_content(recorded, entry.path):
                return True
    return False


def abandon(prepared: Prepared, ctx: JobContext) -> None:
    """Release a prepared slide that will not be embedded in this run (early stop or interruption)."""
    prepared.state.status, prepared.state.stage = "pending", ""
    save_state(ctx.layout.state_dir, prepared.state)
    prepared.lock.release()


def embed(prepared: Prepared, ctx: JobContext) -> tuple[str, SlideState | Future[SlideState]]:
    """Embed a prepared slide and queue its write; the writer thread records the state and releases the lock."""
    entry, state, lock, grid, t0 = prepared.entry, prepared.state, prepared.lock, prepared.grid, prepared.t0
    final = ctx.layout.features(entry.slide_id)
    state.stage = "embed"
    ctx.progress.start_slide(entry.slide_id, len(grid))
    try:
        if len(grid):
            result = embed_slide(prepared.slide, grid, ctx.encoder, batch_size=ctx.batch_size,
                                 workers=ctx.workers, block_k=ctx.block_k, on_batch=ctx.progress.advance_tiles,
                                 max_failed_fraction=ctx.max_failed_fraction, qc=ctx.qc)
        else:
            result = empty_result(ctx.encoder)
    except Exception as exc:  # noqa: BLE001 - one slide's failure must not stop the batch
        return "processed", fail_slide(ctx, state, exc, t0, lock)
    except BaseException:
        lock.release()  # interrupted: leave no lock behind; the state stays "running" (= not done)
        raise
    finally:
        prepared.slide.close()  # release the reader handle before the next slide (memory stays flat)
    split = split_by_qc(result, ctx.qc)
    state.n_excluded_tiles = 0 if split is None else split.n_excluded
    state.n_tiles = result.n_tiles - state.n_excluded_tiles
    state.n_failed_tiles = int((result.tile_status == 2).sum())

    def write() -> SlideState:
        try:
            state.stage = "write"
            write_qc_overlay(grid, result, ctx.qc, ctx.layout.thumbnail(entry.slide_id),
                             ctx.layout.qc_overlay(entry.slide_id))
            write_slide_features(final, grid, ctx.encoder, result, run_id=ctx.run_id, qc=ctx.qc)  # last: "done"
            state.stage, state.status = "done", "done" if state.n_tiles else "empty"
            state.outputs = {"features": {"path": str(final), "bytes": final.stat().st_size},
                             "patches": {"path": str(ctx.layout.patches(entry.slide_id))}}
            return finish_slide(ctx, state, t0, lock)
        except BaseException as exc:  # noqa: BLE001 - recorded, then reported by the caller
            return fail_slide(ctx, state, exc, t0, lock)

    return "processed", ctx.writer.submit(write)


def record_existing(ctx: JobContext, entry: SlideEntry, final: Path) -> SlideState:
    """A complete output without a matching state file (e.g. copied in): record it as done."""
    state = SlideState(entry.slide_id, str(entry.path), status="done", stage="done", encoder=ctx.encoder.name,
                       tiling_config_sha256=ctx.tiling_sha, weights_sha256=ctx.encoder.weights_sha256,
                       outputs={"features": {"path": str(final), "bytes": final.stat().st_size}}, run_id=ctx.run_id)
    save_state(ctx.layout.state_dir, state)
    return state
