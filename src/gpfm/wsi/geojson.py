"""QuPath-compatible GeoJSON for tissue polygons: export, import, round trip.

Export: one ``FeatureCollection``; one ``Feature`` per tissue component; geometry ``Polygon`` (holes as
interior rings, closed rings, exterior counter-clockwise by the signed-area convention), coordinates as float
**level-0 pixels** (y down); properties ``objectType: "annotation"``, ``classification: {name: "Tissue",
color: [r, g, b]}``, ``area_um2``; no ``crs`` member (QuPath reads pixel coordinates).

Import accepts what QuPath writes (a FeatureCollection, a single Feature, or a JSON list of Features, as
older QuPath versions export), keeps Polygon/MultiPolygon geometries (optionally only one classification),
repairs invalid rings and returns their union as a MultiPolygon in level-0 px — the input of
``segment_tissue(slide, "geojson", path=...)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.polygon import orient

from gpfm.atomic import write_text_atomic

TISSUE_COLOR = (0, 200, 0)


def _geometry(tissue: Any) -> Polygon | MultiPolygon:
    return tissue if isinstance(tissue, Polygon | MultiPolygon) else tissue.geometry


def tissue_to_geojson(
    tissue: Any,
    mpp: float | None = None,
    *,
    classification: str = "Tissue",
    color: tuple[int, int, int] = TISSUE_COLOR,
) -> dict[str, Any]:
    """FeatureCollection dict of a :class:`~gpfm.wsi.tissue.TissueMask` or a (Multi)Polygon in level-0 px.

    ``mpp`` (level-0 µm/px) fills ``area_um2``; it defaults to the mask's own mpp.
    """
    mpp = mpp if mpp is not None else getattr(tissue, "mpp", None)
    features = []
    for poly in shapely.get_parts(_geometry(tissue)):
        if not isinstance(poly, Polygon) or poly.is_empty:
            continue
        poly = orient(poly, sign=1.0)  # exterior CCW, interiors CW
        props: dict[str, Any] = {
            "objectType": "annotation",
            "classification": {"name": classification, "color": list(color)},
            "isLocked": False,
        }
        if mpp is not None:
            props["area_um2"] = float(poly.area) * mpp * mpp
        features.append({"type": "Feature", "geometry": mapping(poly), "properties": props})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike[str], tissue: Any, mpp: float | None = None, **kwargs: Any) -> Path:
    """Write :func:`tissue_to_geojson` atomically (``contours_geojson/<slide>.geojson``)."""
    collection = tissue_to_geojson(tissue, mpp, **kwargs)
    text = json.dumps(collection, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
    write_text_atomic(path, text + "\n")
    return Path(path)


def tiles_to_geojson(grid: Any, classification: str = "Tile") -> dict[str, Any]:
    """Kept tiles as QuPath ``tile`` objects with ``tissue_fraction`` as a measurement (large: opt-in).

    Each square is the level-0 footprint ``[x, x + patch_size_level0)²`` of one row of ``grid.coords``.
    """
    size = float(grid.patch_size_level0)
    features = []
    for (x, y), frac in zip(grid.coords.tolist(), grid.tissue_fraction.tolist(), strict=True):
        ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},  # CCW by signed area, like tissue
                "properties": {
                    "objectType": "tile",
                    "classification": {"name": classification, "color": [255, 200, 0]},
                    "measurements": {"tissue_fraction": float(frac)},
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_tiles_geojson(path: str | os.PathLike[str], grid: Any) -> Path:
    """Write :func:`tiles_to_geojson` atomically."""
    write_text_atomic(path, json.dumps(tiles_to_geojson(grid)) + "\n")
    return Path(path)


def _class_name(props: dict[str, Any]) -> str | None:
    cls = (props or {}).get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def read_geojson(path: str | os.PathLike[str], classification: str | None = None) -> MultiPolygon:
    """Union of the polygon features of a GeoJSON file, in level-0 px.

    Args:
        path: ``.geojson``/``.json`` file written by gpfm, QuPath or any GeoJSON tool.
        classification: keep only features whose ``classification.name`` equals this (None: all).

    Raises:
        ValueError: the file is not GeoJSON or holds no polygon (message names the file).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read GeoJSON ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        items = [data]
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict) and "coordinates" in data:
        items = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        raise ValueError(f"{path}: not a GeoJSON FeatureCollection, Feature or list of Features")
    polygons: list[Polygon] = []
    for item in items:
        geom = (item or {}).get("geometry")
        if not geom or geom.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        if classification is not None and _class_name(item.get("properties", {})) != classification:
            continue
        g = shape(geom)
        if not g.is_valid:
            g = shapely.make_valid(g)
        polygons.extend(p for p in shapely.get_parts(g) if isinstance(p, Polygon) and p.area > 0)
    if not polygons:
        which = f" classified {classification!r}" if classification else ""
        raise ValueError(
            f"{path}: no Polygon/MultiPolygon features{which}; draw or export tissue annotations"
        )
    union = shapely.union_all(polygons)
    parts = [p for p in shapely.get_parts(union) if isinstance(p, Polygon)]
    return MultiPolygon(parts)
