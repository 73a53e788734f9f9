"""QuPath GeoJSON export/import: structure, orientation, round trip, QuPath variants, use as tissue mask."""

from __future__ import annotations

import json

import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon

from gpfm.wsi import TilingConfig, open_slide, read_geojson, segment_tissue, tile_slide, write_geojson
from gpfm.wsi.geojson import tiles_to_geojson, write_tiles_geojson


def _holed() -> MultiPolygon:
    a = Polygon([(0, 0), (0, 400), (500, 400), (500, 0)], [[(100, 100), (200, 100), (200, 200), (100, 200)]])
    b = Polygon([(1000, 1000), (1300, 1000), (1300, 1200)])
    return MultiPolygon([a, b])


def test_export_structure(tmp_path):
    path = write_geojson(tmp_path / "s.geojson", _holed(), mpp=0.5)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and "crs" not in data
    assert len(data["features"]) == 2
    first = data["features"][0]
    assert first["properties"]["objectType"] == "annotation"
    assert first["properties"]["classification"]["name"] == "Tissue"
    assert first["properties"]["area_um2"] == pytest.approx((500 * 400 - 100 * 100) * 0.25)
    rings = first["geometry"]["coordinates"]
    assert first["geometry"]["type"] == "Polygon" and len(rings) == 2
    for ring in rings:
        assert ring[0] == ring[-1]  # closed
    assert shapely.LinearRing(rings[0]).is_ccw and not shapely.LinearRing(rings[1]).is_ccw


def test_round_trip_is_exact(tmp_path):
    geometry = _holed()
    back = read_geojson(write_geojson(tmp_path / "r.geojson", geometry, mpp=0.5))
    assert back.symmetric_difference(geometry).area == pytest.approx(0.0)
    assert sum(len(p.interiors) for p in back.geoms) == 1


def test_qupath_variants_and_classification(tmp_path):
    poly = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    other = {"type": "Polygon", "coordinates": [[[20, 20], [30, 20], [30, 30], [20, 20]]]}
    features = [
        {
            "type": "Feature",
            "geometry": poly,
            "properties": {"objectType": "annotation", "classification": {"name": "Tissue"}},
        },
        {"type": "Feature", "geometry": other, "properties": {"classification": {"name": "Tumor"}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}},
    ]
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(features))  # older QuPath exports a bare list
    assert read_geojson(listed).area == pytest.approx(100 + 50)
    assert read_geojson(listed, classification="Tissue").area == pytest.approx(100)
    single = tmp_path / "one.geojson"
    single.write_text(json.dumps(features[0]))
    assert read_geojson(single).area == pytest.approx(100)
    bowtie = tmp_path / "bowtie.geojson"  # self-intersecting ring, as hand drawing can produce
    bowtie.write_text(
        json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]})
    )
    assert read_geojson(bowtie).area == pytest.approx(50)
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(ValueError, match="bad.geojson: no Polygon"):
        read_geojson(bad)


def test_geojson_method_drives_tiling(tmp_path, cmu_path):
    s = open_slide(cmu_path)
    detected = segment_tissue(s)
    path = write_geojson(tmp_path / "cmu.geojson", detected)
    imported = segment_tissue(s, "geojson", path=path)
    assert imported.method == "geojson" and imported.params["path"] == str(path)
    assert imported.area_um2 == pytest.approx(detected.area_um2, rel=1e-9)
    a, b = tile_slide(s, detected, TilingConfig()), tile_slide(s, imported, TilingConfig())
    assert a.coords.tolist() == b.coords.tolist()
    assert a.tiling_config_sha256 != b.tiling_config_sha256  # different segmentation → different tiling hash


def test_tile_geojson(tmp_path, cmu_path):
    s = open_slide(cmu_path)
    grid = tile_slide(s, segment_tissue(s), TilingConfig())
    data = tiles_to_geojson(grid)
    assert len(data["features"]) == len(grid)
    first = data["features"][0]
    assert first["properties"]["objectType"] == "tile"
    assert first["properties"]["measurements"]["tissue_fraction"] == pytest.approx(
        float(grid.tissue_fraction[0])
    )
    ring = shapely.Polygon(first["geometry"]["coordinates"][0])
    x, y = grid.coords[0]
    assert ring.exterior.is_ccw and ring.bounds == (x, y, x + 257, y + 257)
    # The tile squares read back as polygons covering exactly the kept footprints.
    back = read_geojson(write_tiles_geojson(tmp_path / "tiles.geojson", grid))
    expected = shapely.union_all([shapely.box(x, y, x + 257, y + 257) for x, y in grid.coords.tolist()])
    assert back.symmetric_difference(expected).area == pytest.approx(0.0)
