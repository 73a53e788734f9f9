"""The suite runner: every task × protocol × encoder of a suite, resumably, into one results table.

For each task and encoder the runner calls the task's data loader once (only if some protocol still has to
run), then each protocol; each outcome is stored under ``<out>/runs/<task>/<protocol>/<encoder>/``:

* ``result.json``: the :class:`~gpfm.eval.protocol.ProtocolResult` (provenance completed by the runner);
* ``run.json``: the run key, the inputs it hashes, status, reason and wall time;
* ``error.txt``: the traceback of a failure; and the protocol's artifacts.

**Resuming.** The run key is a SHA-256 over the task id and family, the protocol name, version and fully
resolved config, the encoder name, its weights SHA-256, device and precision, and the resolved data block with
the size and mtime of every data file it names. A finished result whose key matches is reused; anything else
(a changed option, new weights, an edited split file) runs again. Failed runs are retried on the next call.
Primary metric, direction and the ``saturated`` flag are not in the key: changing them re-ranks without
re-running.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpfm.atomic import write_json_atomic
from gpfm.eval.protocol import ProtocolResult, TaskContext
from gpfm.eval.run.results import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    ResultRow,
    ResultsTable,
    metric_higher_is_better,
)
from gpfm.eval.run.store import (
    data_fingerprint,
    load_finished,
    new_staging_dir,
    one_line,
    record_failure,
    stable_hash,
    swap_in,
)
from gpfm.eval.suite import Suite, TaskSpec, load_suite, missing_data_paths, resolve_data_paths
from gpfm.hashing import file_digest

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
FAITHFUL_FLAG = "val==test (faithful)"
SATURATED_FLAG = "saturated"


def parse_weights_overrides(items: Sequence[str] | None) -> dict[str, str]:
    """Turn ``["gpfm=/w/gpfm.pth", "resnet50-imagenet=random"]`` into a name → weights mapping.

    Items may also be comma-separated (``gpfm=random,uni=/w/uni.bin``).

    Raises:
        ValueError: an item is not of the form ``name=path`` or ``name=random``.
    """
    out: dict[str, str] = {}
    for item in (part for raw in items or [] for part in raw.split(",") if part.strip()):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"--weights {item!r}: expected ENCODER=PATH or ENCODER=random")
        out[name.strip()] = value.strip()
    return out


def _code_version() -> str:
    import gpfm

    return gpfm.__version__


class _EncoderState:
    """Per-encoder facts resolved once: weights identity and precision, or the reason it cannot run.

    The precision is resolved here (not left as "default") because the hardware default differs between
    machines (bf16 only on native-bf16 CPUs) and must be part of the run key.
    """

    def __init__(self, name: str, weights: str | None, device: str, precision: str | None) -> None:
        from gpfm.models.identity import resolve_encoder

        self.name, self.weights = name, weights
        self.weights_sha256: str | None = None
        self.precision: str | None = precision
        self.error: str | None = None
        try:
            identity = resolve_encoder(name, weights, device, precision)
            self.precision, self.weights_sha256 = identity.precision, identity.weights_sha256
        except Exception as err:  # bad precision or missing weights: all its tasks fail (recorded)
            self.error = one_line(err)


def run_suite(
    suite_path: str | Path,
    encoders: Sequence[str],
    out_dir: str | Path,
    data_root: str | Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    weights: Mapping[str, str] | None = None,
    only_tasks: Sequence[str] | None = None,
    rerun: bool = False,
    *,
    report: bool = True,
    progress: Callable[[ResultRow], None] | None = None,
) -> ResultsTable:
    """Run every task × protocol × encoder of a suite and write the results table (and the HTML report).

    Args:
        suite_path: suite YAML (or the name of a shipped suite, e.g. ``lc25000_demo``).
        encoders: registered encoder names.
        out_dir: run folder (created); reused results are looked up here.
        data_root: folder for relative data paths and ``${DATA_ROOT}`` (default: the suite's folder).
        device: torch device for embedding (None = CUDA when available).
        precision: encoder precision (None = the encoder's hardware default).
        weights: encoder name → weights path or ``random`` (None = each encoder's usual resolution).
        only_tasks: run only these task ids (validated against the suite).
        rerun: ignore finished results and run everything again.
        report: also write ``leaderboard.json`` and the self-contained ``report.html``.
        progress: called with each row as soon as it is final (e.g. to print progress).

    Returns:
        The :class:`ResultsTable`, also written to ``<out>/results.csv`` and ``<out>/results.json``.
    """
    from gpfm.runtime import resolve_device

    suite = load_suite(suite_path, data_root=data_root)
    tasks = suite.select(list(only_tasks) if only_tasks else None)
    if not encoders:
        raise ValueError("no encoders given; pass e.g. --encoders gpfm,uni")
    if len(set(encoders)) != len(encoders):
        raise ValueError(f"encoder names repeat in {list(encoders)}; give each encoder once")
    from gpfm.models import get_encoder_spec

    for name in encoders:  # a misspelt name is a usage error (exit 2), not a column of failed runs
        get_encoder_spec(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = dict(weights or {})
    unknown_weights = sorted(set(weights) - set(encoders))
    if unknown_weights:
        raise ValueError(
            f"--weights names encoder(s) {unknown_weights} that are not in --encoders {list(encoders)}"
        )
    device_str = str(resolve_device(device))
    cache_dir = (
        Path(suite.defaults.cache_dir).expanduser() if suite.defaults.cache_dir else out / "feature_cache"
    )
    if not cache_dir.is_absolute():
        cache_dir = suite.base_dir / cache_dir
    states = {name: _EncoderState(name, weights.get(name), device_str, precision) for name in encoders}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    rows: list[ResultRow] = []
    for task in tasks:
        for name in encoders:
            ctx = TaskContext(
                encoder=name,
                base_dir=suite.base_dir,
                cache_dir=cache_dir,
                device=device_str,
                precision=states[name].precision,  # resolved once, so loaders and the run key agree
                weights=weights.get(name),
                batch_size=suite.defaults.batch_size,
            )
            for row in _run_task_encoder(suite, task, states[name], ctx, out, rerun):
                rows.append(row)
                if progress is not None:
                    progress(row)
    from gpfm.runtime import machine_info

    table = ResultsTable(
        rows=rows,
        meta={
            "suite": suite.name,
            "suite_path": str(suite.path),
            "suite_version": suite.version,
            "suite_description": suite.description,
            "data_root": str(suite.base_dir),
            "encoders": list(encoders),
            "weights": {n: (s.weights_sha256 or s.error) for n, s in states.items()},
            "device": device_str,
            "precision": precision or "default",
            "tasks": [t.id for t in tasks],
            "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "gpfm_version": _code_version(),
            "machine": machine_info(),
            "task_info": {t.id: _task_info(t) for t in tasks},
            "references": suite.references,
            "paper": suite.paper,
            "not_reproducible": list(suite.not_reproducible),
        },
    )
    table.write(out)
    if report:
        from gpfm.eval.report import write_report

        write_report(out)
    return table


def _task_info(task: TaskSpec) -> dict[str, Any]:
    return {
        "family": task.family,
        "group": task.group,
        "protocols": list(task.protocols),
        "description": task.description,
        "source": task.source,
        "license": task.license,
        "data_kind": task.data.kind,
        "saturated": task.saturated,
        "obtain": task.obtain,
        "reference": task.reference,
    }


def _base_row(
    task: TaskSpec, protocol: str, encoder: str, status: str, reason: str = "", version: int | None = None
) -> ResultRow:
    if version is None:
        from gpfm.eval.protocol import PROTOCOLS

        version = PROTOCOLS.get(protocol).version if protocol in PROTOCOLS else None
    return ResultRow(
        task=task.id,
        family=task.family,
        group=task.group,
        protocol=protocol,
        protocol_version=version,
        encoder=encoder,
        status=status,
        reason=reason,
        headline=protocol == task.headline_protocol,
        saturated=task.saturated,
        primary_metric=task.primary_metric,
        higher_is_better=metric_higher_is_better(task.primary_metric or "", task.metric_direction),
    )


def _run_task_encoder(
    suite: Suite, task: TaskSpec, enc: _EncoderState, ctx: TaskContext, out: Path, rerun: bool
) -> list[ResultRow]:
    """All protocols of one task for one encoder; the loader is called at most once."""
    from gpfm.eval.protocol import PROTOCOLS, TASK_LOADERS, create_protocol

    block = resolve_data_paths(task.data, suite.base_dir)
    missing = missing_data_paths(block, encoder=enc.name)
    if missing:
        reason = f"data not found at {missing[0]}" + (
            f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        )
        return [_base_row(task, p, enc.name, STATUS_SKIPPED, reason) for p in task.protocols]
    if enc.error is not None:
        return [
            _base_row(task, p, enc.name, STATUS_FAILED, f"encoder {enc.name}: {enc.error}")
            for p in task.protocols
        ]
    if task.data.kind not in TASK_LOADERS:
        reason = (
            f"no task loader registered for data kind {task.data.kind!r} (known: {', '.join(TASK_LOADERS)})"
        )
        return [_base_row(task, p, enc.name, STATUS_FAILED, reason) for p in task.protocols]

    pending: list[tuple[str, Any, str, dict[str, Any]]] = []  # (protocol, instance, key, key inputs)
    rows: dict[str, ResultRow] = {}
    for pname in task.protocols:
        if pname not in PROTOCOLS:
            rows[pname] = _base_row(
                task,
                pname,
                enc.name,
                STATUS_FAILED,
                f"unknown protocol {pname!r} (known: {', '.join(PROTOCOLS)})",
            )
            continue
        try:
            proto = create_protocol(pname, **task.protocol_options.get(pname, {}))
        except Exception as err:
            rows[pname] = _base_row(task, pname, enc.name, STATUS_FAILED, one_line(err))
            continue
        inputs = {
            "task": task.id,
            "family": task.family,
            "protocol": proto.resolved_config(),
            "encoder": enc.name,
            "weights_sha256": enc.weights_sha256,
            "device": ctx.device,
            "precision": enc.precision,
            "data": block,
            "data_files": data_fingerprint(block, enc.name),
        }
        key = stable_hash(inputs)
        run_dir = out / RUNS_DIR / task.id / pname / enc.name
        reused = None if rerun else load_finished(run_dir, key)
        if reused is not None:
            rows[pname] = _row_from_result(task, reused[0], run_dir, out, key, reused=True, seconds=reused[1])
        else:
            pending.append((pname, proto, key, inputs))

    if pending:
        t0 = time.perf_counter()
        try:
            data = TASK_LOADERS.get(task.data.kind)(block, ctx)
            load_error, load_status = None, STATUS_OK
        except Exception as err:
            from gpfm.models import WeightsNotFoundError

            data, load_error = None, err
            data_missing = isinstance(err, FileNotFoundError) and not isinstance(err, WeightsNotFoundError)
            load_status = STATUS_SKIPPED if data_missing else STATUS_FAILED
        load_seconds = time.perf_counter() - t0
        for pname, proto, key, inputs in pending:
            run_dir = out / RUNS_DIR / task.id / pname / enc.name
            if load_error is not None:
                prefix = (
                    "data not found: " if load_status == STATUS_SKIPPED else f"loading {task.data.kind}: "
                )
                row = _base_row(
                    task, pname, enc.name, load_status, prefix + one_line(load_error), proto.version
                )
                record_failure(run_dir, key, inputs, row, load_error)
            else:
                row = _run_protocol(task, proto, data, run_dir, out, key, inputs, enc, ctx, load_seconds)
                load_seconds = 0.0  # charge the loader to the first protocol only
            rows[pname] = row
            log.info(
                "%s / %s / %s: %s %s",
                task.id,
                pname,
                enc.name,
                row.status,
                row.value if row.ok else row.reason,
            )
    return [rows[p] for p in task.protocols]


def _run_protocol(
    task: TaskSpec,
    proto: Any,
    data: Any,
    run_dir: Path,
    out: Path,
    key: str,
    inputs: dict[str, Any],
    enc: _EncoderState,
    ctx: TaskContext,
    extra_seconds: float,
) -> ResultRow:
    """Run one protocol into a fresh folder, then swap it in place of any older result."""
    staging = new_staging_dir(run_dir)
    t0 = time.perf_counter()
    try:
        proto.check_data(data)
        result = proto.run(data, staging, task=task.id, encoder=enc.name)
        if not isinstance(result, ProtocolResult):
            raise TypeError(f"protocol {proto.name} returned {type(result).__name__}, not a ProtocolResult")
        metric = task.primary_metric or result.primary_metric
        if metric not in result.metrics:
            raise ValueError(
                f"primary metric {metric!r} is not among the metrics {sorted(result.metrics)} "
                f"of {proto.name}; fix primary_metric of task {task.id}"
            )
        if not math.isfinite(float(result.metrics[metric])):
            raise ValueError(
                f"primary metric {metric!r} is {result.metrics[metric]} (undefined on this test set)"
            )
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)
        row = _base_row(task, proto.name, enc.name, STATUS_FAILED, one_line(err), proto.version)
        record_failure(run_dir, key, inputs, row, err)
        return row
    except BaseException:  # Ctrl-C: leave no staging folder behind, keep any older result
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0 + extra_seconds
    result.provenance = {
        **result.provenance,
        "encoder_weights_sha256": result.provenance.get("encoder_weights_sha256", enc.weights_sha256),
        "device": result.provenance.get("device", ctx.device),
        "precision_resolved": ctx.precision,
        "data": inputs["data"],
        "data_files": inputs["data_files"],
        "run_key": key,
        "gpfm_version": result.provenance.get("gpfm_version", _code_version()),
    }
    if not result.config:
        result.config = proto.resolved_config()
    result.save(staging / "result.json")
    write_json_atomic(
        staging / "run.json",
        {
            "run_key": key,
            "inputs": inputs,
            "status": STATUS_OK,
            "seconds": seconds,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "result_sha256": file_digest(staging / "result.json"),  # a reused result must be this file
        },
    )
    swap_in(staging, run_dir)
    return _row_from_result(task, result, run_dir, out, key, reused=False, seconds=seconds)


def _row_from_result(
    task: TaskSpec,
    result: ProtocolResult,
    run_dir: Path,
    out: Path,
    key: str,
    *,
    reused: bool,
    seconds: float,
) -> ResultRow:
    metric = task.primary_metric or result.primary_metric
    row = _base_row(task, result.protocol, result.encoder, STATUS_OK, version=result.protocol_version)
    if metric not in result.metrics:
        row.status, row.reason = (
            STATUS_FAILED,
            f"primary metric {metric!r} not among {sorted(result.metrics)}",
        )
        return row
    flags = list(result.flags)
    if result.protocol.endswith("-faithful") and not any("val==test" in f for f in flags):
        flags.append(FAITHFUL_FLAG)
    if task.saturated and SATURATED_FLAG not in flags:
        flags.append(SATURATED_FLAG)
    ci = result.ci95.get(metric)
    row.primary_metric = metric
    row.higher_is_better = metric_higher_is_better(metric, task.metric_direction)
    row.value = float(result.metrics[metric])
    row.ci_low, row.ci_high = (float(ci[0]), float(ci[1])) if ci is not None else (None, None)
    row.sd = float(result.metrics_sd[metric]) if metric in result.metrics_sd else None
    row.flags = flags
    row.result_path = str((run_dir / "result.json").relative_to(out))
    row.run_key, row.reused, row.seconds = key, reused, seconds
    return row
