"""Progress display: one bar for the whole run (slides) and one per slide (tiles, with tiles/s).

Bars are drawn with tqdm on a terminal only; when stderr is not a TTY (logs, CI, pipes) they are silent and
one log line per slide is written instead, so log files do not fill with carriage-return noise.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Overall + per-slide progress.

    Args:
        total_slides: slides this process may process.
        enabled: True/False to force; None to show bars only on a TTY.
    """

    def __init__(self, total_slides: int, enabled: bool | None = None) -> None:
        self.enabled = _is_tty() if enabled is None else enabled
        self._overall: Any = None
        self._slide: Any = None
        self.tiles_done = 0
        if self.enabled:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self._overall = tqdm(total=total_slides, desc="slides", unit="slide", position=0, dynamic_ncols=True)

    def start_slide(self, slide_id: str, n_tiles: int) -> None:
        """Open the per-slide bar."""
        if self.enabled:
            self._slide = self._tqdm(total=n_tiles, desc=slide_id[:32], unit="tile", position=1, leave=False,
                                     dynamic_ncols=True)

    def advance_tiles(self, n: int) -> None:
        """Count ``n`` embedded tiles."""
        self.tiles_done += n
        if self._slide is not None:
            self._slide.update(n)
        if self._overall is not None:
            self._overall.set_postfix(tiles=self.tiles_done, refresh=False)

    def end_slide(self, slide_id: str, status: str, n_tiles: int, seconds: float) -> None:
        """Close the per-slide bar and count the slide."""
        if self._slide is not None:
            self._slide.close()
            self._slide = None
        rate = n_tiles / seconds if seconds > 0 else 0.0
        if self._overall is not None:
            self._overall.update(1)
            self._overall.write(f"{slide_id}: {status} ({n_tiles} tiles, {rate:.1f} tiles/s)")
        else:
            log.info("%s: %s (%d tiles, %.1f s, %.1f tiles/s)", slide_id, status, n_tiles, seconds, rate)

    def close(self) -> None:
        """Close all bars."""
        if self._slide is not None:
            self._slide.close()
        if self._overall is not None:
            self._overall.close()
