"""Polygon repair shared by tissue detection, GeoJSON import and tiling."""

from __future__ import annotations

import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry


def valid_multipolygon(geometry: BaseGeometry) -> MultiPolygon:
    """A valid MultiPolygon of the polygonal parts of ``geometry``, with disjoint components.

    Invalid input (self-intersecting rings, holes touching the shell — common in hand-drawn QuPath
    annotations and traced contours) is repaired with GEOS's ``structure`` method, which keeps holes as
    holes (the default ``linework`` method can turn a hole touching the shell into a line and fill it).
    """
    if geometry is None or geometry.is_empty:
        return MultiPolygon()
    if not geometry.is_valid:
        try:
            geometry = shapely.make_valid(geometry, method="structure")
        except (TypeError, ValueError, shapely.errors.GEOSException):  # older GEOS: no "structure"
            geometry = geometry.buffer(0)
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, Polygon) and p.area > 0]
    if len(parts) > 1:
        merged = shapely.union_all(parts)
        parts = [p for p in shapely.get_parts(merged) if isinstance(p, Polygon) and p.area > 0]
    return MultiPolygon(parts)
