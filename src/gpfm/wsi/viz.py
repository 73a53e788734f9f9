"""Pictures of a slide run: thumbnail, tissue contours, kept-tile grid, PCA feature map.

All drawings are RGB uint8 arrays over a thumbnail whose pixel (r, c) covers level-0
``[c·scale, (c+1)·scale) × [r·scale, (r+1)·scale)`` (``scale`` = level-0 px per thumbnail px, returned by
:func:`thumbnail_image`). Colours: tissue green, holes blue, kept tiles yellow outlines, feature map = the
first three PCA components of the tile features as RGB. :func:`save_jpeg` writes JPEG quality 85 atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import shapely
from PIL import Image, ImageDraw, ImageFont
from shapely.geometry import Polygon

from gpfm.atomic import atomic_path
from gpfm.wsi.readers.slide import Slide

TISSUE_RGB = (0, 200, 0)
HOLE_RGB = (0, 80, 255)
TILE_RGB = (255, 200, 0)
JPEG_QUALITY = 85


def save_jpeg(
    image: np.ndarray | Image.Image, path: str | os.PathLike[str], quality: int = JPEG_QUALITY
) -> Path:
    """Write an RGB image as JPEG (quality 85) through a temp file + fsync + atomic rename."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    with atomic_path(path) as tmp:
        img.convert("RGB").save(tmp, format="JPEG", quality=quality)
    return Path(path)


def thumbnail_image(slide: Slide, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """(thumbnail RGB uint8, level-0 px per thumbnail px); never upsampled."""
    scale = max(1.0, max(slide.dimensions) / float(max_side))
    return slide.read_scaled(scale), scale


def _ring_px(coords, scale: float) -> np.ndarray:
    return np.round(np.asarray(coords)[:, :2] / scale).astype(np.int32).reshape(-1, 1, 2)


def contours_image(thumbnail: np.ndarray, scale: float, tissue, thickness: int = 2) -> np.ndarray:
    """Thumbnail with tissue outlines (green) and hole outlines (blue)."""
    out = np.ascontiguousarray(thumbnail.copy())
    geometry = tissue if isinstance(tissue, shapely.Geometry) else tissue.geometry
    for poly in shapely.get_parts(geometry):
        if not isinstance(poly, Polygon) or poly.is_empty:
            continue
        cv2.polylines(out, [_ring_px(poly.exterior.coords, scale)], True, TISSUE_RGB, thickness, cv2.LINE_8)
        for ring in poly.interiors:
            cv2.polylines(out, [_ring_px(ring.coords, scale)], True, HOLE_RGB, thickness, cv2.LINE_8)
    return out


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(image)
    font = ImageFont.load_default()
    pad = 4
    draw = ImageDraw.Draw(img)
    lines: list[str] = []
    for part in text.split(" | "):  # wrap at the separators when the thumbnail is narrow
        joined = f"{lines[-1]} | {part}" if lines else part
        if lines and draw.textlength(joined, font=font) <= img.width - 2 * pad:
            lines[-1] = joined
        else:
            lines.append(part)
    block = "\n".join(lines)
    box = draw.multiline_textbbox((0, 0), block, font=font)
    bar = Image.new("RGB", (img.width, box[3] - box[1] + 2 * pad + 2), (255, 255, 255))
    ImageDraw.Draw(bar).multiline_text((pad, pad), block, fill=(0, 0, 0), font=font)
    out = Image.new("RGB", (img.width, img.height + bar.height), (255, 255, 255))
    out.paste(img, (0, 0))
    out.paste(bar, (0, img.height))
    return np.asarray(out)


def grid_caption(grid) -> str:
    """``<slide> | gpfm-128um: 256 px at 0.5 µm/px (128 µm), level 0 read 257 px | 88 tiles``."""
    return (
        f"{grid.slide_id} | {grid.config.recipe}: {grid.config.tile_px} px at {grid.target_mpp:.4g} um/px "
        f"({grid.fov_um:.4g} um), level {grid.read_level} read {grid.read_size_px} px | {len(grid)} tiles"
    )


def tile_grid_image(
    thumbnail: np.ndarray, scale: float, grid, tissue=None, caption: bool = True, thickness: int = 1
) -> np.ndarray:
    """Kept tiles (yellow squares) over the thumbnail, optionally over the tissue contours, with a caption."""
    out = (
        contours_image(thumbnail, scale, tissue)
        if tissue is not None
        else np.ascontiguousarray(thumbnail.copy())
    )
    side = grid.patch_size_level0 / scale
    for x, y in np.asarray(grid.coords).tolist():
        x0, y0 = round(x / scale), round(y / scale)
        cv2.rectangle(out, (x0, y0), (round(x0 + side) - 1, round(y0 + side) - 1), TILE_RGB, thickness)
    return _caption(out, grid_caption(grid)) if caption else out


def pca_colors(features: np.ndarray) -> np.ndarray:
    """(N, 3) float in [0, 1]: first three PCA components, each scaled by its 1st–99th percentile."""
    from sklearn.decomposition import PCA

    feats = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = feats.shape[0]
    colors = np.full((n, 3), 0.5)
    k = min(3, n, feats.shape[1]) if n > 1 else 0
    if k:
        comps = PCA(n_components=k, random_state=0).fit_transform(feats)
        lo, hi = np.percentile(comps, 1, axis=0), np.percentile(comps, 99, axis=0)
        colors[:, :k] = np.clip((comps - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
    return colors


def feature_map_image(
    coords: np.ndarray,
    features: np.ndarray,
    thumbnail: np.ndarray,
    scale: float,
    patch_size_level0: int,
    alpha: float = 0.65,
) -> np.ndarray:
    """Paint each tile footprint with the RGB of its first 3 feature PCA components over the thumbnail."""
    out = thumbnail.astype(np.float32).copy()
    colors = (pca_colors(features) * 255.0).astype(np.float32)
    side = patch_size_level0 / scale
    h, w = out.shape[:2]
    for (x, y), color in zip(np.asarray(coords).tolist(), colors, strict=True):
        x0, y0 = round(x / scale), round(y / scale)
        x1, y1 = min(w, max(x0 + 1, round(x0 + side))), min(h, max(y0 + 1, round(y0 + side)))
        if x0 >= w or y0 >= h:
            continue
        out[y0:y1, x0:x1] = (1 - alpha) * out[y0:y1, x0:x1] + alpha * color
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


#: Colours of the QC overlay: excluded reasons filled, kept tiles outlined (flagged ones in their reason's colour).
QC_RGB = {"ok": (0, 200, 0), "background": (160, 160, 160), "pen": (40, 90, 255), "black": (0, 0, 0),
          "blur": (255, 140, 0)}


def qc_overlay_image(thumbnail: np.ndarray, scale: float, coords: np.ndarray, patch_size_level0: int,
                     reasons: np.ndarray, excluded: np.ndarray, caption: str = "", alpha: float = 0.55) -> np.ndarray:
    """Tile QC over the thumbnail: excluded tiles filled in their reason's colour, kept tiles outlined.

    Args:
        thumbnail: RGB uint8 thumbnail.
        scale: level-0 px per thumbnail px.
        coords: (N, 2) level-0 top-left of every tiled tile (kept and excluded).
        patch_size_level0: tile side in level-0 px.
        reasons: (N,) reason codes (:data:`gpfm.wsi.qc.REASONS`).
        excluded: (N,) True for tiles kept out of the features.
        caption: text under the picture (a legend is appended).
        alpha: opacity of the fill of excluded tiles.
    """
    from gpfm.wsi.qc import REASONS

    out = thumbnail.astype(np.float32).copy()
    side = patch_size_level0 / scale
    h, w = out.shape[:2]
    boxes = []
    for (x, y), code, gone in zip(np.asarray(coords).tolist(), np.asarray(reasons).tolist(),
                                  np.asarray(excluded).tolist(), strict=True):
        x0, y0 = round(x / scale), round(y / scale)
        x1, y1 = min(w, max(x0 + 1, round(x0 + side))), min(h, max(y0 + 1, round(y0 + side)))
        color = QC_RGB[REASONS[int(code)]]
        if gone and x0 < w and y0 < h:
            out[y0:y1, x0:x1] = (1 - alpha) * out[y0:y1, x0:x1] + alpha * np.asarray(color, np.float32)
        boxes.append((x0, y0, x1 - 1, y1 - 1, color))
    image = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    for x0, y0, x1, y1, color in boxes:
        cv2.rectangle(image, (x0, y0), (x1, y1), color, 1)
    counts = {r: int(((np.asarray(reasons) == i) & np.asarray(excluded)).sum()) for i, r in enumerate(REASONS)}
    legend = "excluded: " + ", ".join(f"{r} {n}" for r, n in counts.items() if n) if any(counts.values()) else (
        "no tile excluded")
    flagged = int(((np.asarray(reasons) != 0) & ~np.asarray(excluded)).sum())
    text = " | ".join(t for t in (caption, legend, f"flagged, kept: {flagged}",
                                  "fill = excluded (blue pen, black, grey background, orange blur)") if t)
    return _caption(image, text)
