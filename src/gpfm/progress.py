"""Progress for long work: a tqdm bar on a terminal, periodic log lines everywhere else.

Long phases (embedding a dataset, pretraining iterations) must never look hung. On a TTY a bar is drawn; when
stderr is a file or a pipe (Slurm logs, CI) a one-line INFO message is logged at most every ``every_s``
seconds, and always at the end, so log files show progress without carriage-return noise.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("gpfm.progress")


def stderr_is_tty() -> bool:
    """True when stderr is an interactive terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """Count work done; draw a bar on a TTY, else log a line every ``every_s`` seconds.

    Args:
        total: units of work (None when unknown).
        desc: what is being done ("embedding 900 images with uni").
        unit: unit name ("img", "it").
        enabled: force the bar on/off (None: on a TTY only).
        every_s: seconds between log lines when no bar is drawn.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, enabled: bool | None = None,
                 every_s: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done = 0
        self._t0 = self._last = time.perf_counter()
        self._bar: Any = None
        if stderr_is_tty() if enabled is None else enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Count ``n`` more units (``postfix`` values are shown on the bar and in log lines)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("%s", self.line(**postfix))

    def line(self, **postfix: Any) -> str:
        """One progress line: ``desc: done/total unit (rate/s, eta)``."""
        elapsed = max(1e-9, time.perf_counter() - self._t0)
        rate = self.done / elapsed
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", eta {max(0.0, (self.total - self.done) / rate):.0f} s"
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        return f"{self.desc}: {self.done}{of} {self.unit} ({rate:.1f} {self.unit}/s{eta}{extra})"

    def close(self) -> None:
        """Close the bar (or log the final line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.done:
            log.info("%s done", self.line())


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> Iterator[ProgressBar]:
    """A :class:`ProgressBar` closed at the end of the ``with`` block."""
    bar = ProgressBar(total, desc, unit, **kwargs)
    try:
        yield bar
    finally:
        bar.close()
