"""Deep Zoom (DZI) tiles of any slide gpfm can read, for the browser viewer.

The pyramid follows the Deep Zoom format that OpenSeadragon reads: level ``L = ceil(log2(max(W, H)))`` is the
full resolution, level ``l`` is downsampled by ``2**(L - l)``, tiles are ``tile_size`` px plus ``overlap`` px on
each inner side, JPEG. Each tile row is read once from the slide's best pyramid level for its scale and
area-resampled (the readers' own compositing: OpenSlide transparency on white). ``max_side`` caps the
resolution of the top level for very large slides (recorded in the returned description).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class DeepZoom:
    """A written Deep Zoom pyramid.

    Attributes:
        files_dir: the ``<name>_files`` folder (one sub-folder per level).
        width: full-resolution width of the pyramid (px).
        height: full-resolution height (px).
        tile_size: tile side without overlap.
        overlap: overlap px.
        format: tile file extension.
        level0_per_px: slide level-0 px per pyramid px at the top level (1 unless ``max_side`` capped it).
        n_tiles: tiles written.
    """

    files_dir: Path
    width: int
    height: int
    tile_size: int
    overlap: int
    format: str
    level0_per_px: float
    n_tiles: int

    def tile_source(self, url: str) -> dict:
        """The OpenSeadragon DZI tile source as a JS object (no XML fetch: works from ``file://``)."""
        return {"Image": {"xmlns": "http://schemas.microsoft.com/deepzoom/2008", "Url": url, "Format": self.format,
                          "Overlap": str(self.overlap), "TileSize": str(self.tile_size),
                          "Size": {"Width": str(self.width), "Height": str(self.height)}}}


def _read_box(slide, x0: float, y0: float, w: int, h: int, scale: float) -> np.ndarray:
    """(h, w, 3) pixels covering level-0 ``[x0, x0 + w·scale) × [y0, y0 + h·scale)``, area-resampled."""
    level = max(i for i in range(slide.level_count) if slide.level_downsamples[i] <= scale * (1 + 1e-6) or i == 0)
    ds = slide.level_downsamples[level]
    lw, lh = max(1, round(w * scale / ds)), max(1, round(h * scale / ds))
    region = slide.read_level_region(level, slide.level_origin(x0, level), slide.level_origin(y0, level), (lw, lh))
    if region.shape[:2] != (h, w):
        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA if lw > w else cv2.INTER_LINEAR)
    return region


def write_deepzoom(slide, out_dir: str | os.PathLike[str], name: str = "slide", *, tile_size: int = 254,
                   overlap: int = 1, quality: int = 85, max_side: int | None = None) -> DeepZoom:
    """Write ``<out_dir>/<name>_files/<level>/<col>_<row>.jpeg`` for ``slide`` (a :class:`gpfm.wsi.Slide`)."""
    w0, h0 = slide.dimensions
    top_scale = max(1.0, max(w0, h0) / max_side) if max_side else 1.0
    width, height = math.ceil(w0 / top_scale), math.ceil(h0 / top_scale)
    levels = math.ceil(math.log2(max(width, height))) if max(width, height) > 1 else 0
    files = Path(out_dir) / f"{name}_files"
    n = 0
    for level in range(levels + 1):
        factor = 2 ** (levels - level)
        lw, lh = math.ceil(width / factor), math.ceil(height / factor)
        scale = top_scale * factor  # level-0 px per px of this level
        folder = files / str(level)
        folder.mkdir(parents=True, exist_ok=True)
        cols, rows = math.ceil(lw / tile_size), math.ceil(lh / tile_size)
        for row in range(rows):
            y0 = max(0, row * tile_size - overlap)
            y1 = min(lh, (row + 1) * tile_size + overlap)
            strip = _read_box(slide, 0, y0 * scale, lw, y1 - y0, scale)
            for col in range(cols):
                x0 = max(0, col * tile_size - overlap)
                x1 = min(lw, (col + 1) * tile_size + overlap)
                Image.fromarray(strip[:, x0:x1]).save(folder / f"{col}_{row}.jpeg", quality=quality)
                n += 1
    return DeepZoom(files, width, height, tile_size, overlap, "jpeg", top_scale, n)
