"""Per-tile scores drawn on the slide: normalisation, blending of overlapping tiles, picture, QuPath and TIFF.

The scores can come from anything (MIL attention, a probe, similarity to a query, any per-tile scalar): this
module only knows tiles (level-0 top-left ``coords`` and their level-0 side) and one float per tile. Where tiles
overlap, each pixel shows the MEAN of the tiles covering it (a running sum and a coverage count), never the last
tile drawn. How the scores were normalised (``rank`` or ``minmax``), their range and the colour map are drawn
into the picture as a legend and recorded in :class:`Heatmap`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Normalization = Literal["rank", "minmax", "none"]
NORMALIZATIONS: tuple[str, ...] = ("rank", "minmax", "none")


def normalize_scores(scores: np.ndarray, method: Normalization = "rank") -> np.ndarray:
    """Scores mapped to [0, 1].

    ``rank``: percentile rank, ties averaged (robust to outliers); ``minmax``: linear between the min and max;
    ``none``: clipped to [0, 1] (for probabilities).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} tile score(s) are not finite; fix the score source")
    if method == "rank":
        from scipy.stats import rankdata

        return (rankdata(s) - 1) / max(len(s) - 1, 1) if len(s) > 1 else np.full(len(s), 0.5)
    if method == "minmax":
        lo, hi = float(s.min()), float(s.max())
        return (s - lo) / (hi - lo) if hi > lo else np.full(len(s), 0.5)
    if method == "none":
        return np.clip(s, 0.0, 1.0)
    raise ValueError(f"unknown normalisation {method!r}; use one of {', '.join(NORMALIZATIONS)}")


@dataclass
class Heatmap:
    """Tile scores on a slide, rasterised at ``scale`` level-0 px per heatmap px.

    Attributes:
        values: (h, w) float32 mean normalised score per pixel (NaN where no tile).
        coverage: (h, w) number of tiles covering each pixel.
        scale: level-0 px per heatmap px.
        label: what the scores are (shown in the legend).
        normalization: how scores were mapped to [0, 1].
        raw_range: (min, max) of the raw scores.
        cmap: matplotlib colour map name.
        meta: anything else to record (source, model, query...).
    """

    values: np.ndarray
    coverage: np.ndarray
    scale: float
    label: str
    normalization: str
    raw_range: tuple[float, float]
    cmap: str = "jet"
    meta: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What the heatmap is, as JSON (written next to every export)."""
        return {"label": self.label, "normalization": self.normalization, "raw_min": self.raw_range[0],
                "raw_max": self.raw_range[1], "cmap": self.cmap, "scale_level0_px_per_px": self.scale,
                "tiles_blended": "mean of overlapping tiles", **self.meta}


def rasterize(coords: np.ndarray, scores01: np.ndarray, tile_size_level0: float, slide_size: tuple[int, int],
              scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean score per heatmap pixel over the tiles covering it; returns ``(values, coverage)``."""
    w, h = int(np.ceil(slide_size[0] / scale)), int(np.ceil(slide_size[1] / scale))
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    # a pixel belongs to a tile when its centre lies inside it: exact coverage counts for any overlap
    for (x, y), v in zip(np.asarray(coords, dtype=np.float64), np.asarray(scores01, dtype=np.float64), strict=True):
        x0, y0 = int(np.ceil(x / scale - 0.5)), int(np.ceil(y / scale - 0.5))
        x1, y1 = int(np.ceil((x + tile_size_level0) / scale - 0.5)), int(np.ceil((y + tile_size_level0) / scale - 0.5))
        x1, y1 = min(w, max(x1, x0 + 1)), min(h, max(y1, y0 + 1))  # a tile smaller than a pixel still shows
        x0, y0 = max(0, x0), max(0, y0)
        if x0 >= x1 or y0 >= y1:
            continue
        total[y0:y1, x0:x1] += v
        count[y0:y1, x0:x1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(count > 0, total / count, np.nan).astype(np.float32)
    return values, count.astype(np.uint16)


def make_heatmap(coords: np.ndarray, scores: np.ndarray, tile_size_level0: float, slide_size: tuple[int, int],
                 *, max_side: int = 2048, normalization: Normalization = "rank", label: str = "score",
                 cmap: str = "jet", meta: dict[str, Any] | None = None) -> Heatmap:
    """Normalise ``scores`` and rasterise them so that the longer side of the slide is ``max_side`` px."""
    coords = np.asarray(coords)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(coords) != len(scores):
        raise ValueError(f"{len(scores)} scores for {len(coords)} tiles; scores must be tile-aligned")
    if not len(scores):
        raise ValueError("no tiles to draw")
    scale = max(slide_size) / max_side
    values, coverage = rasterize(coords, normalize_scores(scores, normalization), tile_size_level0, slide_size,
                                 scale)
    return Heatmap(values, coverage, scale, label, normalization, (float(scores.min()), float(scores.max())), cmap,
                   dict(meta or {}))


def colorize(heatmap: Heatmap) -> np.ndarray:
    """(h, w, 4) uint8 RGBA: the colour map where tiles are, transparent elsewhere."""
    from matplotlib import colormaps

    rgba = colormaps[heatmap.cmap](np.nan_to_num(heatmap.values, nan=0.0))
    rgba[..., 3] = np.where(np.isnan(heatmap.values), 0.0, 1.0)
    return (rgba * 255 + 0.5).astype(np.uint8)


def _legend(width: int, heatmap: Heatmap) -> np.ndarray:
    """A colour bar with its meaning: label, normalisation, raw range."""
    from matplotlib import colormaps

    size = max(12, width // 70)  # legible at any picture size
    bar, pad = size, size // 2 + 4
    height = pad + bar + 2 * (size + 6) + pad
    img = Image.new("RGB", (width, height), (255, 255, 255))
    grad = (colormaps[heatmap.cmap](np.linspace(0, 1, max(width - 2 * pad, 2)))[:, :3] * 255).astype(np.uint8)
    img.paste(Image.fromarray(np.repeat(grad[None], bar, axis=0)), (pad, pad))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=size)
    lo, hi = "0", "1"
    draw.text((pad, pad + bar + 2), lo, fill=(0, 0, 0), font=font)
    draw.text((width - pad - size, pad + bar + 2), hi, fill=(0, 0, 0), font=font)
    how = {"rank": "percentile rank", "minmax": "min-max", "none": "raw, clipped to [0, 1]"}[heatmap.normalization]
    text = (f"{heatmap.label}: {how} (raw {heatmap.raw_range[0]:.4g} to {heatmap.raw_range[1]:.4g}); "
            f"{heatmap.cmap}; overlaps averaged")
    draw.text((pad, pad + bar + size + 8), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def overlay_image(thumbnail: np.ndarray, heatmap: Heatmap, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
    """The heatmap blended over a slide thumbnail of the same aspect, with the legend underneath."""
    rgba = colorize(heatmap)
    h, w = thumbnail.shape[:2]
    if rgba.shape[:2] != (h, w):
        rgba = np.asarray(Image.fromarray(rgba).resize((w, h), Image.Resampling.NEAREST))
    a = (rgba[..., 3:4].astype(np.float32) / 255.0) * alpha
    out = (thumbnail[..., :3].astype(np.float32) * (1 - a) + rgba[..., :3].astype(np.float32) * a + 0.5)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return np.concatenate([out, _legend(w, heatmap)], axis=0) if legend else out


def scores_to_geojson(coords: np.ndarray, tile_size_level0: float, scores: np.ndarray, name: str,
                      scores01: np.ndarray | None = None, classification: str = "Heatmap tile") -> dict[str, Any]:
    """QuPath detections: one square per tile (level-0 px), the score (and its normalised value) as measurements.

    QuPath (0.4+) reads this with File → Import objects: ``objectType: detection`` and ``measurements`` as a
    name → number mapping; the tile colour can be set from the measurement in QuPath's measurement maps.
    """
    side = float(tile_size_level0)
    feats = []
    for i, ((x, y), v) in enumerate(zip(np.asarray(coords, dtype=np.float64), np.asarray(scores, dtype=np.float64),
                                        strict=True)):
        ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
        measurements = {name: float(v)}
        if scores01 is not None:
            measurements[f"{name} (normalised)"] = float(scores01[i])
        feats.append({"type": "Feature", "id": f"tile-{i}",
                      "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"objectType": "detection", "classification": {"name": classification},
                                     "measurements": measurements}})
    return {"type": "FeatureCollection", "features": feats}


def write_geojson(path: str | os.PathLike[str], collection: dict[str, Any]) -> Path:
    """Write a GeoJSON collection atomically."""
    from gpfm.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, json.dumps(collection))
    return path
