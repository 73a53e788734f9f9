"""tiffslide backend: pure-Python (tifffile + zarr) reader for SVS and the TIFF family.

Fallback when OpenSlide is missing or rejects a file, and the choice for bit-exact integer level reads
(it indexes the decoded level array directly; no interpolation at any downsample).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpfm.wsi.mpp import MppCandidate, candidates_from_properties
from gpfm.wsi.readers.base import SlideBackend, composite_on_white, paste_clipped


class TiffSlideBackend(SlideBackend):
    """A file opened with ``tiffslide.TiffSlide``."""

    name = "tiffslide"

    def __init__(self, path: Path, **options: object) -> None:
        super().__init__(path)
        import tiffslide
        from tiffslide._zarr import get_zarr_selection

        self._tiffslide = tiffslide
        self._select = get_zarr_selection
        self._handle = tiffslide.TiffSlide(str(path))
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in self._handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._handle.level_downsamples)
        self.properties = dict(self._handle.properties)
        self._axes = self.properties.get("tiffslide.series-axes", "YXS")
        if self._axes not in ("YXS", "CYX", "YX"):
            raise ValueError(f"unsupported TIFF axes {self._axes!r}")

    def mpp_candidates(self, extra_keys: tuple[str, ...] = ()) -> list[MppCandidate]:
        """µm/px readings in lookup order."""
        # Vendor and TIFF keys first so the provenance is exact; tiffslide's own normalised value last.
        found = candidates_from_properties(self.properties, normalised_prefix=None, extra_keys=extra_keys)
        return found + candidates_from_properties(self.properties, normalised_prefix="tiffslide")[:1]

    def _fetch(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        if self._axes == "CYX":
            arr = self._select(self._handle.zarr_group, level, (slice(None), slice(y0, y1), slice(x0, x1)))
            arr = np.moveaxis(arr, 0, -1)
        elif self._axes == "YX":
            arr = self._select(self._handle.zarr_group, level, (slice(y0, y1), slice(x0, x1)))
        else:
            arr = self._select(self._handle.zarr_group, level, (slice(y0, y1), slice(x0, x1), slice(None)))
        return composite_on_white(np.asarray(arr, dtype=np.uint8))

    def read_level(self, level: int, lx: int, ly: int, width: int, height: int) -> np.ndarray:
        """Integer level-space read; white outside the level."""
        return paste_clipped(
            self.level_dimensions[level],
            lx,
            ly,
            width,
            height,
            lambda x0, y0, x1, y1: self._fetch(level, x0, y0, x1, y1),
        )

    @property
    def version(self) -> str:
        """Reader library and version."""
        return f"tiffslide {self._tiffslide.__version__}"

    def close(self) -> None:
        """Release the file handle."""
        self._handle.close()
