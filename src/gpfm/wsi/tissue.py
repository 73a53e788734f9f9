"""Tissue detection at low resolution → polygons in level-0 px, with holes.

Methods (``segment_tissue(slide, method, **overrides)``):

* ``hsv`` (default): saturation of the HSV image at ``seg_mpp`` (8 µm/px), median blur (7 px), threshold
  (fixed 8, or Otsu with ``use_otsu``), morphological close (4 px), contours with hierarchy (outer + holes).
* ``clam-tcga``: the CLAM TCGA preset the GPFM authors used — Otsu on, a_t 16 and a_h 4 reference tiles of
  512×512 level-0 px (so its thresholds grow 4× on 20× slides, as in CLAM), at most 8 holes.
* ``otsu``: grayscale Otsu after suppressing grey/black/white (low-saturation) pixels; small objects and
  holes removed.
* ``geojson``: polygons from a QuPath/GeoJSON file (``path=...``), level-0 px; overrides segmentation.
* learned segmenters (:mod:`gpfm.wsi.tissue_models`): ``deeplabv3-hest`` (HEST-1k's DeepLabV3, as TRIDENT) and
  ``deeplabv3-mobilenet``; options ``weights=`` (path or ``random``) and ``device=``; their masks go through the
  same polygon extraction and area filters.

Area thresholds are in µm² (``area_unit="um2"``): minimum component 262,144 µm² (0.26 mm²), minimum hole
65,536 µm², at most 8 holes per component — the CLAM TCGA values on a 40× slide, now resolution-independent.
Holes at least the minimum area are excluded from tissue unless ``holes_are_tissue``. The segmentation
image is built from the coarsest level with mpp ≤ ``seg_mpp`` by strided reads (never a full-res plane).

Tile QC for extracted tiles: :func:`tile_qc` / :func:`tile_is_tissue` (background, pen ink, black, blur).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from gpfm.wsi.geometry import valid_multipolygon
from gpfm.wsi.readers.base import composite_on_white
from gpfm.wsi.readers.slide import Slide

REF_TILE_LEVEL0_PX = 512  # CLAM's reference tile for a_t / a_h


@dataclass(frozen=True)
class TissueParams:
    """Parameters of the threshold segmenters (presets in :data:`PRESETS`).

    Attributes:
        seg_mpp: µm/px of the segmentation image.
        saturation_threshold: fixed saturation threshold (0–255) when ``use_otsu`` is off.
        use_otsu: Otsu threshold on the blurred saturation (``hsv``/``clam-tcga``).
        median_px: median blur kernel (odd, seg px).
        close_px: morphological closing kernel (seg px; 0 disables).
        min_tissue_area: minimum component area (tissue minus its holes), in ``area_unit``.
        min_hole_area: minimum hole area, in ``area_unit``.
        max_holes: holes kept per component (largest first).
        area_unit: ``um2`` or ``ref512`` (number of 512×512 level-0 px reference tiles, CLAM's unit).
        holes_are_tissue: keep lumina as tissue (TRIDENT's default) instead of excluding them.
        remove_pen: drop blue/green/red/black ink pixels before thresholding.
        grey_saturation: ``otsu`` method: pixels with saturation below this are background.
        simplify_px: polygon simplification tolerance in seg px.
    """

    seg_mpp: float = 8.0
    saturation_threshold: float = 8.0
    use_otsu: bool = False
    median_px: int = 7
    close_px: int = 4
    min_tissue_area: float = 262_144.0
    min_hole_area: float = 65_536.0
    max_holes: int = 8
    area_unit: str = "um2"
    holes_are_tissue: bool = False
    remove_pen: bool = False
    grey_saturation: float = 15.0
    simplify_px: float = 0.5

    def __post_init__(self) -> None:
        if self.area_unit not in ("um2", "ref512"):
            raise ValueError(f"area_unit must be 'um2' or 'ref512', got {self.area_unit!r}")
        if self.seg_mpp <= 0:
            raise ValueError(f"seg_mpp must be positive, got {self.seg_mpp}")

    def area_um2(self, value: float, mpp0: float) -> float:
        """A threshold in µm² on a slide with level-0 µm/px ``mpp0``."""
        return value if self.area_unit == "um2" else value * (REF_TILE_LEVEL0_PX * mpp0) ** 2


PRESETS: dict[str, TissueParams] = {
    "hsv": TissueParams(),
    "otsu": TissueParams(close_px=2),
    "clam-tcga": TissueParams(use_otsu=True, min_tissue_area=16, min_hole_area=4, area_unit="ref512"),
    "geojson": TissueParams(),
}
THRESHOLD_METHODS = tuple(PRESETS)


def _learned_methods() -> tuple[str, ...]:
    from gpfm.wsi.tissue_models import TISSUE_MODELS

    return tuple(TISSUE_MODELS.names())


METHODS = THRESHOLD_METHODS + _learned_methods()


@dataclass
class TissueMask:
    """Tissue of one slide: polygons in level-0 px (holes as interiors) plus the low-res mask they came from.

    Attributes:
        geometry: (Multi)Polygon in level-0 px (x right, y down).
        mask: bool (H, W) mask at ``scale`` level-0 px per mask px (after area filtering; holes excluded).
        scale: level-0 px per mask px.
        mpp: level-0 µm/px of the slide (x), used for areas.
        method: segmentation method name; ``params`` its parameters (recorded in outputs).
        background_rgb: the slide's background (glass) colour, the median of the pixels well away from tissue
            and ink; padding of edge tiles uses it (white when the image has no such pixels).
    """

    geometry: Polygon | MultiPolygon
    mask: np.ndarray
    scale: float
    mpp: float
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    background_rgb: tuple[int, int, int] = (255, 255, 255)

    @property
    def area_um2(self) -> float:
        """Tissue area in µm² (polygon area × mpp²)."""
        return float(self.geometry.area) * self.mpp * self.mpp

    @property
    def polygons(self) -> list[Polygon]:
        """The tissue components as Polygons."""
        return [p for p in shapely.get_parts(self.geometry) if isinstance(p, Polygon) and not p.is_empty]

    @property
    def n_holes(self) -> int:
        """Number of holes over all components."""
        return sum(len(p.interiors) for p in self.polygons)

    def __len__(self) -> int:
        return len(self.polygons)


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of blue, green, pure-red or black marker ink (hue ranges on the OpenCV 0–180 hue circle)."""
    return pen_mask_hsv(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))


def pen_mask_hsv(hsv: np.ndarray) -> np.ndarray:
    """:func:`pen_mask` of an image already converted to OpenCV HSV."""
    h, s, v = (hsv[..., i].astype(np.int16) for i in range(3))
    blue = (h >= 100) & (h <= 135) & (s > 60)
    green = (h >= 35) & (h <= 95) & (s > 50)
    red = ((h >= 172) | (h <= 8)) & (s > 120)  # eosin is pink (h 140–172, s < 150): not red ink
    black = (v < 40) & (s < 80)
    return blue | green | red | black


def fill_small_holes(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` with every 4-connected background component of at most ``max_size`` px set to True."""
    n, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel(), minlength=n)
    small = sizes <= max_size
    small[0] = False  # label 0 is the foreground itself
    return mask | small[labels]


def _saturation_mask(rgb: np.ndarray, p: TissueParams) -> np.ndarray:
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    if p.median_px > 1:
        sat = cv2.medianBlur(sat, p.median_px | 1)
    if p.use_otsu:
        thr, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        thr = max(thr, p.saturation_threshold)  # an all-background image must not split its noise
    else:
        thr = p.saturation_threshold
    return sat > thr


def _grey_otsu_mask(rgb: np.ndarray, p: TissueParams) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    suppressed = hsv[..., 1] < p.grey_saturation
    grey = np.where(suppressed, 255, grey).astype(np.uint8)
    if p.median_px > 1:
        grey = cv2.medianBlur(grey, p.median_px | 1)
    thr, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return (grey < min(thr, 250)) & ~suppressed


def threshold_mask(rgb: np.ndarray, method: str, p: TissueParams) -> np.ndarray:
    """Raw bool tissue mask of a low-res RGB image (before area filtering)."""
    mask = _grey_otsu_mask(rgb, p) if method == "otsu" else _saturation_mask(rgb, p)
    if p.remove_pen:
        mask &= ~pen_mask(rgb)
    if p.close_px > 0:
        kernel = np.ones((p.close_px, p.close_px), np.uint8)
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    return mask


def mask_to_geometry(
    mask: np.ndarray, scale: float, mpp0: float, p: TissueParams
) -> tuple[Polygon | MultiPolygon, np.ndarray]:
    """Contours with hierarchy → filtered polygons in level-0 px, and the mask redrawn from them.

    Contour point (c, r) is a mask-pixel centre, mapped to level-0 ((c + 0.5)·scale, (r + 0.5)·scale).
    Component area = outer area − kept-hole areas; components under ``min_tissue_area`` are dropped, holes
    under ``min_hole_area`` are filled, at most ``max_holes`` (largest) are kept.
    """
    px_um2 = (scale * mpp0) ** 2
    min_tissue_px = p.area_um2(p.min_tissue_area, mpp0) / px_um2
    min_hole_px = p.area_um2(p.min_hole_area, mpp0) / px_um2
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    clean = np.zeros(mask.shape, np.uint8)
    polygons: list[Polygon] = []
    if hierarchy is None:
        return MultiPolygon(), clean.astype(bool)
    hierarchy = hierarchy[0]
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:
            continue
        holes = []
        child = hierarchy[i][2]
        while child != -1:
            area = cv2.contourArea(contours[child])
            if area >= min_hole_px and not p.holes_are_tissue:
                holes.append((area, contours[child]))
            child = hierarchy[child][0]
        holes = sorted(holes, key=lambda t: -t[0])[: p.max_holes]
        outer_area = cv2.contourArea(contour)
        if outer_area - sum(a for a, _ in holes) < min_tissue_px or len(contour) < 3:
            continue
        cv2.drawContours(clean, [contour], -1, 1, thickness=cv2.FILLED)
        for _, hole in holes:
            cv2.drawContours(clean, [hole], -1, 0, thickness=cv2.FILLED)

        def to_level0(c: np.ndarray) -> np.ndarray:
            return (c.reshape(-1, 2).astype(np.float64) + 0.5) * scale

        poly = valid_multipolygon(
            Polygon(to_level0(contour), [to_level0(h) for _, h in holes if len(h) >= 3])
        )
        if p.simplify_px > 0:
            poly = poly.simplify(p.simplify_px * scale, preserve_topology=True)
        polygons.extend(q for q in shapely.get_parts(poly) if isinstance(q, Polygon) and q.area > 0)
    return valid_multipolygon(MultiPolygon(polygons)), clean.astype(bool)


def rasterize(geometry: Polygon | MultiPolygon, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Bool mask (H, W) at ``scale`` level-0 px per px of ``geometry`` (holes cleared)."""
    out = np.zeros(shape, np.uint8)
    for poly in shapely.get_parts(geometry):
        if not isinstance(poly, Polygon) or poly.is_empty:
            continue
        ext = np.round(np.asarray(poly.exterior.coords) / scale - 0.5).astype(np.int32)
        cv2.fillPoly(out, [ext], 1)
        for ring in poly.interiors:
            cv2.fillPoly(out, [np.round(np.asarray(ring.coords) / scale - 0.5).astype(np.int32)], 0)
    return out.astype(bool)


def segment_tissue(
    slide: Slide, method: str = "hsv", params: TissueParams | None = None, **overrides: Any
) -> TissueMask:
    """Find tissue on ``slide``.

    Args:
        slide: open slide with a known mpp.
        method: ``hsv`` | ``otsu`` | ``clam-tcga`` | ``geojson``.
        params: full parameter set (default: the method's preset).
        **overrides: fields of :class:`TissueParams` to change (e.g. ``holes_are_tissue=True``); for
            ``geojson`` also ``path`` (required) and ``classification`` (only features of that class).

    Returns:
        The tissue polygons (possibly empty) in level-0 px with the low-res mask.
    """
    if method not in METHODS:
        raise ValueError(f"unknown tissue method {method!r}; choose one of {', '.join(METHODS)}")
    if method not in PRESETS:
        return _segment_learned(slide, method, params, **overrides)
    geojson_path = overrides.pop("path", None)
    classification = overrides.pop("classification", None)
    p = dataclasses.replace(params or PRESETS[method], **overrides)
    mpp0 = slide.mpp
    scale = max(1.0, p.seg_mpp / mpp0)
    recorded = {**dataclasses.asdict(p)}
    if method == "geojson":
        from gpfm.wsi.geojson import read_geojson

        if geojson_path is None:
            raise ValueError(f"{slide.path.name}: method='geojson' needs path=<file.geojson>")
        geometry = read_geojson(geojson_path, classification=classification)
        w0, h0 = slide.dimensions
        shape = (max(1, int(np.ceil(h0 / scale))), max(1, int(np.ceil(w0 / scale))))
        recorded = {"path": str(geojson_path), "classification": classification, "seg_mpp": p.seg_mpp}
        return TissueMask(geometry, rasterize(geometry, shape, scale), scale, mpp0, method, recorded)
    rgb = slide.read_scaled(scale)
    geometry, clean = mask_to_geometry(threshold_mask(rgb, method, p), scale, mpp0, p)
    return TissueMask(geometry, clean, scale, mpp0, method, recorded, background_colour(rgb, clean))


def learned_params(method: str, params: TissueParams | None = None, **overrides: Any) -> tuple[TissueParams, str]:
    """The area-filter parameters of a learned segmenter (``hsv`` preset at the model's µm/px) and its weights."""
    from gpfm.wsi.tissue_models import TISSUE_MODELS

    spec = TISSUE_MODELS.get(method)
    overrides = {k: v for k, v in overrides.items() if k not in ("weights", "device")}
    p = dataclasses.replace(params or PRESETS["hsv"], **{**overrides, "seg_mpp": spec.seg_mpp})
    return p, spec.name


def learned_record(method: str, p: TissueParams, weights_sha256: str) -> dict[str, Any]:
    """The parameter record of a learned segmentation (hashed into the tiling configuration)."""
    keep = ("seg_mpp", "min_tissue_area", "min_hole_area", "max_holes", "area_unit", "holes_are_tissue",
            "simplify_px", "close_px")
    return {"model": method, "weights_sha256": weights_sha256, **{k: getattr(p, k) for k in keep}}


def _segment_learned(slide: Slide, method: str, params: TissueParams | None, **overrides: Any) -> TissueMask:
    from gpfm.wsi.tissue_models import load_tissue_model, predict_tissue

    loaded = load_tissue_model(method, overrides.get("weights"), overrides.get("device"))
    p, _ = learned_params(method, params, **overrides)
    mpp0 = slide.mpp
    scale = max(1.0, p.seg_mpp / mpp0)
    rgb = slide.read_scaled(scale)
    mask = predict_tissue(loaded, rgb)
    if p.close_px > 0:
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((p.close_px,) * 2, np.uint8)) > 0
    geometry, clean = mask_to_geometry(mask, scale, mpp0, p)
    return TissueMask(geometry, clean, scale, mpp0, method, learned_record(method, p, loaded.weights_sha256),
                      background_colour(rgb, clean))


#: Fewest background pixels from which a background colour is estimated (else white).
MIN_BACKGROUND_PX = 64


def background_colour(rgb: np.ndarray, tissue: np.ndarray, margin_px: int = 3) -> tuple[int, int, int]:
    """Median RGB of the pixels at least ``margin_px`` away from tissue and not ink; white when too few."""
    near = cv2.dilate(tissue.astype(np.uint8), np.ones((2 * margin_px + 1,) * 2, np.uint8)).astype(bool)
    away = ~near & ~pen_mask(rgb)
    if int(away.sum()) < MIN_BACKGROUND_PX:
        return (255, 255, 255)
    return tuple(int(v) for v in np.median(rgb[away], axis=0))  # type: ignore[return-value]


@dataclass(frozen=True)
class TileQC:
    """Tile-level quality figures (fractions of the tile) and the verdict."""

    tissue_fraction: float
    pen_fraction: float
    black_fraction: float
    white_fraction: float
    sharpness: float
    is_tissue: bool
    reason: str


def tile_qc(
    rgb: np.ndarray,
    *,
    min_tissue_fraction: float = 0.25,
    max_pen_fraction: float = 0.2,
    max_black_fraction: float = 0.5,
    saturation_threshold: float = 20.0,
    min_sharpness: float | None = None,
    work_px: int = 512,
) -> TileQC:
    """Background / pen / black / blur QC of one tile (any size; RGBA composited onto white).

    Tissue pixels have (5-px median-blurred) saturation > ``saturation_threshold`` and are not ink; the
    tissue mask is closed and holes under 1/16 of the tile are filled (so adipose and lumina count)
    before taking its fraction. Sharpness is
    the variance of the Laplacian of the grey tile resampled to ``work_px`` (blurred pen marks score < 5;
    the check is off unless ``min_sharpness`` is set).
    """
    rgb = composite_on_white(np.asarray(rgb))
    if max(rgb.shape[:2]) != work_px:
        f = work_px / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat, val = cv2.medianBlur(hsv[..., 1], 5), hsv[..., 2]  # the blur removes glass noise and dust
    pen = pen_mask(rgb)
    black = (val < 40) & ~pen
    white = (sat <= saturation_threshold) & (val >= 200)
    tissue = (sat > saturation_threshold) & ~pen & ~black
    k = max(3, work_px // 32)
    tissue = cv2.morphologyEx(tissue.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((k, k), np.uint8)).astype(
        bool
    )
    tissue = fill_small_holes(tissue, tissue.size // 16) & ~pen  # adipocytes and lumina count
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    sharp = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    fractions = (float(tissue.mean()), float(pen.mean()), float(black.mean()), float(white.mean()))
    if fractions[1] >= max_pen_fraction:
        reason = "pen"
    elif fractions[2] >= max_black_fraction:
        reason = "black"
    elif fractions[0] < min_tissue_fraction:
        reason = "background"
    elif min_sharpness is not None and sharp < min_sharpness:
        reason = "blur"
    else:
        reason = "tissue"
    return TileQC(*fractions, sharpness=sharp, is_tissue=reason == "tissue", reason=reason)


def tile_is_tissue(rgb: np.ndarray, **kwargs: Any) -> bool:
    """True when :func:`tile_qc` keeps the tile (enough tissue, no pen ink, not black, sharp if asked)."""
    return tile_qc(rgb, **kwargs).is_tissue
