"""OpenSlide backend (default): SVS, generic tiled TIFF, NDPI, MRXS, SCN, BIF, Philips TIFF, DICOM-WSI.

Uses the ``openslide-bin`` wheel (OpenSlide ≥ 4). OpenSlide returns out-of-bounds and no-data pixels as
transparent; they are composited onto white here. OpenSlide paints level > 0 reads at the fractional
position ``x0 / downsample``; this backend asks for ``x0 = round(lx · downsample)``, which is an exact
integer level read whenever the downsample is an integer (the common case) and a sub-pixel interpolated
read otherwise (e.g. downsample 2.0005) — use ``backend="tiffslide"`` where bit-exact level reads matter.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

from gpfm.wsi.readers.base import SlideBackend, composite_on_white, composite_premultiplied_on_white


class OpenSlideBackend(SlideBackend):
    """A file opened with ``openslide.OpenSlide``."""

    name = "openslide"

    def __init__(self, path: Path, **options: object) -> None:
        super().__init__(path)
        import openslide

        self._openslide = openslide
        self._handle = openslide.OpenSlide(str(path))
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in self._handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._handle.level_downsamples)
        self.properties = dict(self._handle.properties)
        raw = getattr(openslide.lowlevel, "_read_region", None)
        little = sys.byteorder == "little"
        self._raw = raw if little and hasattr(self._handle, "_osr") else None

    def read_level(self, level: int, lx: int, ly: int, width: int, height: int) -> np.ndarray:
        """Integer level-space read; white outside the level."""
        ds = self.level_downsamples[level]
        x0, y0 = round(lx * ds), round(ly * ds)
        if self._raw is not None and width > 0 and height > 0:
            # OpenSlide's own premultiplied ARGB buffer, composited exactly onto white (skips the
            # un-premultiply + re-multiply round trip of the PIL path).
            buf = (int(width) * int(height) * ctypes.c_uint32)()
            self._raw(self._handle._osr, buf, x0, y0, level, int(width), int(height))
            bgra = np.frombuffer(buf, dtype=np.uint8).reshape(int(height), int(width), 4)
            return composite_premultiplied_on_white(bgra)
        region = self._handle.read_region((x0, y0), level, (int(width), int(height)))
        return composite_on_white(np.asarray(region))

    @property
    def bounds(self) -> tuple[int, int, int, int] | None:
        """Non-empty region (x, y, w, h) in level-0 px, or None."""
        keys = (
            "openslide.bounds-x",
            "openslide.bounds-y",
            "openslide.bounds-width",
            "openslide.bounds-height",
        )
        if not all(k in self.properties for k in keys):
            return None
        x, y, w, h = (int(self.properties[k]) for k in keys)
        return x, y, w, h

    @property
    def version(self) -> str:
        """Reader library and version."""
        lib, py = self._openslide.__library_version__, self._openslide.__version__
        return f"openslide {lib} (openslide-python {py})"

    def close(self) -> None:
        """Release the file handle."""
        self._handle.close()
