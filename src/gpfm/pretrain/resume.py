"""Resume safety: the config a checkpoint was trained with, and the health of a checkpoint before it counts.

* A resumed run must continue the *same* run. Keys that shape the weights (architecture, losses, optimiser,
  data, schedules) must equal the checkpoint's recorded config; only operational keys (where and how often
  to write, device, workers, when to stop) may change. Anything else is refused with the changed keys named,
  unless the user allows it explicitly, in which case the change is appended to ``config_history.jsonl`` and
  ``config.yaml`` is rewritten, so the record always describes the weights.
* A checkpoint is *healthy* when its weights are finite and no loss spike happened since the previous
  checkpoint (a loss above :data:`SPIKE_FACTOR` × the median of the last :data:`SPIKE_WINDOW` iterations).
  The NaN guard names, and resume prefers, the newest healthy checkpoint.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpfm.pretrain.checkpoint import ResumeError

#: Config keys that may change between a checkpoint and its resume (they do not shape the weights).
OPERATIONAL_KEYS = frozenset({
    "train.output_dir", "train.device", "train.stop_at_iteration", "train.checkpoint_every", "train.keep_last",
    "train.teacher_checkpoint_every", "train.log_every", "train.probe_root", "train.probe_every",
    "train.probe_max_images", "data.num_workers", "train.tf32",
})
#: Iterations whose median total loss is the spike reference.
SPIKE_WINDOW = 50
#: A total loss above this multiple of the recent median marks the next checkpoint unhealthy.
SPIKE_FACTOR = 5.0
#: Iterations before the spike rule applies (early losses move fast).
SPIKE_WARMUP = 20


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every weight-shaping key that differs (operational keys ignored)."""
    old, new = _flatten(recorded), _flatten(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in OPERATIONAL_KEYS or old.get(key) == new.get(key):
            continue
        changes.append(f"{key}: {old.get(key, '(absent)')!r} → {new.get(key, '(absent)')!r}")
    return changes


def check_resume_config(recorded: dict[str, Any], current: dict[str, Any], checkpoint: Path,
                        allow_change: bool) -> list[str]:
    """The weight-shaping changes of a resume; raises :class:`ResumeError` for any unless ``allow_change``."""
    changes = config_changes(recorded, current) if recorded else []
    if changes and not allow_change:
        shown = "; ".join(changes[:4]) + (f"; … ({len(changes)} keys)" if len(changes) > 4 else "")
        raise ResumeError(
            f"{checkpoint}: the config differs from the one this run was trained with ({shown}); resume with the "
            "run's config.yaml, start a new train.output_dir, or pass --allow-config-change to continue and "
            "record the change"
        )
    return changes


def record_config_change(run_dir: Path, iteration: int, changes: list[str]) -> None:
    """Append one line to ``config_history.jsonl``: at which iteration which keys changed."""
    with open(run_dir / "config_history.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"iteration": iteration, "changes": changes}) + "\n")


class LossSpikeGuard:
    """Watch the total loss; say whether a checkpoint written now may be called healthy."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=SPIKE_WINDOW)
        self.spike: str = ""

    def observe(self, iteration: int, loss: float) -> None:
        """Record one iteration's total loss (a spike is remembered until :meth:`reset`)."""
        if len(self.recent) >= SPIKE_WARMUP and not self.spike:
            median = float(np.median(self.recent))
            if median > 0 and loss > SPIKE_FACTOR * median:
                self.spike = f"loss {loss:.4g} at iteration {iteration} > {SPIKE_FACTOR:g} × median {median:.4g}"
        self.recent.append(loss)

    def verdict(self, meta: torch.nn.Module) -> dict[str, Any]:
        """``{"healthy", "weights_finite", "reason"}`` for a checkpoint of ``meta`` written now."""
        finite = all(bool(torch.isfinite(p).all()) for p in meta.parameters() if p.is_floating_point())
        reason = "" if finite else "non-finite weights"
        reason = "; ".join(r for r in (reason, self.spike) if r)
        return {"healthy": finite and not self.spike, "weights_finite": finite, "reason": reason}

    def reset(self) -> None:
        """Start a new checkpoint interval."""
        self.spike = ""
