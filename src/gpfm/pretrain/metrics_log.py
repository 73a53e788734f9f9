"""Observability of a pretraining run: per-phase timers, JSONL + TensorBoard records, curve plots.

Records are flat ``{name: number}`` dicts, one per logged iteration, written as one JSON line each to
``metrics.jsonl`` (append mode, so a resumed run continues the same file) and as TensorBoard scalars.
:func:`plot_metrics` draws the curves from the JSONL alone (usable on a finished or running run).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

PHASES = ("data", "teacher", "experts", "student_forward", "backward", "optimizer", "ema")


class PhaseTimer:
    """Accumulates wall time per phase: CUDA events on GPU (no sync inside the step), perf_counter on CPU.

    Example:
        >>> timer = PhaseTimer(torch.device("cpu"))
        >>> with timer.phase("backward"):
        ...     pass
        >>> sorted(timer.collect())
        ['backward']
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._cpu: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, Any, Any]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block under ``name``."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._cpu[name] += time.perf_counter() - t0

    def add(self, name: str, seconds: float) -> None:
        """Add host-measured seconds (e.g. the data wait) to ``name``."""
        self._cpu[name] += seconds

    def collect(self) -> dict[str, float]:
        """Seconds per phase since the last call (synchronises CUDA once), then reset."""
        out = dict(self._cpu)
        if self._events:
            torch.cuda.synchronize()
            for name, start, end in self._events:
                out[name] = out.get(name, 0.0) + start.elapsed_time(end) / 1000.0
        self._cpu.clear()
        self._events.clear()
        return out


class MetricsLogger:
    """Writes records to ``<run>/metrics.jsonl`` and TensorBoard ``<run>/tensorboard`` (rank 0 only).

    Args:
        run_dir: the run folder.
        enabled: False on non-zero ranks (nothing is written).
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
                except ImportError:  # tensorboard is optional at runtime
                    self._tb = None

    def log(self, iteration: int, record: dict[str, float]) -> None:
        """Append one record (non-finite values are written as null in JSON, skipped in TensorBoard)."""
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in record.items()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"iteration": iteration, **clean}) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                if value is not None:
                    self._tb.add_scalar(key, value, iteration)

    def truncate_after(self, iteration: int) -> int:
        """Drop records past ``iteration`` (the lost tail of a killed run, redone after resume); returns how many.

        Without this a resumed run would log those iterations twice.
        """
        if not self.enabled or not self.path.is_file():
            return 0
        from gpfm.atomic import write_text_atomic

        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                if int(json.loads(line).get("iteration", 0)) > iteration:
                    continue
            except (ValueError, TypeError, AttributeError):
                continue  # a torn last line of a killed write
            kept.append(line)
        if len(kept) != len(lines):
            write_text_atomic(self.path, "".join(kept))
        return len(lines) - len(kept)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``, one per iteration.

    Lines of the same iteration are merged, later values winning (a resumed run re-logging an iteration; a
    probe logged next to the step metrics).
    """
    by_iter: dict[int, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_iter.setdefault(int(rec["iteration"]), {}).update(rec)
    return [by_iter[k] for k in sorted(by_iter)]


_PANELS = (
    ("losses (upstream names)", lambda k: k.startswith("loss/")),
    ("objective", lambda k: k == "objective"),
    ("schedules", lambda k: k.startswith("sched/")),
    ("throughput", lambda k: k in ("images_per_s", "data_wait_fraction")),
    ("phase seconds / step", lambda k: k.startswith("time/")),
    ("grad norm (pre-clip) / probe accuracy", lambda k: k.startswith(("grad_norm/", "probe/"))),
)


def plot_metrics(path: str | Path, out: str | Path) -> Path:
    """Plot the curves of a ``metrics.jsonl`` into a PNG grid (one panel per family); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpfm.atomic import atomic_path

    records = read_metrics(path)
    keys = sorted({k for r in records for k in r if k != "iteration"})
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    for ax, (title, pick) in zip(axes.flat, _PANELS, strict=True):
        for key in filter(pick, keys):
            pts = [(r["iteration"], r[key]) for r in records if r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=key.split("/", 1)[-1], lw=1)
        if title == "schedules":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out
