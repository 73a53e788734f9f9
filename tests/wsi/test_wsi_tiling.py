"""Tiling grid rules against hand computation: exact µm/px, no drift, level choice, keep rule, edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from gpfm.wsi import TILE_PADDED, TilingConfig, TilingError, open_slide, tile_slide, tiling_config_sha256
from gpfm.wsi.tissue import segment_tissue

SPEC_COORD_ATTRS = [
    "patch_size",
    "patch_size_level0",
    "level0_magnification",
    "target_magnification",
    "overlap",
    "name",
    "savetodir",
    "level0_width",
    "level0_height",
    "gpfm_schema_version",
    "coords_convention",
    "mpp_level0_x",
    "mpp_level0_y",
    "mpp_source",
    "target_mpp",
    "fov_um",
    "tile_size_level0_exact",
    "stride_level0_exact",
    "read_level",
    "read_downsample",
    "read_size_px",
    "grid_origin",
    "tiling_recipe",
    "keep_rule",
    "min_tissue_fraction",
    "edge_policy",
    "seg_method",
    "seg_params_json",
    "tiling_config_sha256",
    "slide_relpath",
    "slide_fingerprint",
    "reader",
    "reader_version",
    "gpfm_version",
    "created_utc",
]


def _expected_axis(extent: int, stride: float, patch: int) -> list[int]:
    """Tile starts along one axis computed independently: round(k·stride) while the tile fits."""
    out, k = [], 0
    while round(k * stride) + patch <= extent:
        out.append(round(k * stride))
        k += 1
    return out


def test_cmu_grid_is_exact_at_0499_mpp(cmu_path):
    s = open_slide(cmu_path)
    grid = tile_slide(s, None, TilingConfig(edge_policy="exclude"))  # whole tiles only: the lattice itself
    stride = 256 * 0.5 / 0.499
    assert grid.tile_size_level0_exact == pytest.approx(128 / 0.499)
    assert grid.stride_level0_exact == pytest.approx(stride)
    assert grid.patch_size_level0 == round(128 / 0.499) == 257
    assert grid.read_level == 0 and grid.read_size_px == 257 == round(128 / 0.499)
    xs, ys = _expected_axis(2220, stride, 257), _expected_axis(2967, stride, 257)
    assert len(grid) == len(xs) * len(ys) == 88
    expected = np.array([(x, y) for y in ys for x in xs], dtype=np.int64)  # row-major: y then x
    np.testing.assert_array_equal(grid.coords, expected)
    assert grid.coords.dtype == np.int64
    # No drift: the last column starts at round(7·256.513) = 1796, not 7·256 = 1792 or 7·257 = 1799.
    assert grid.coords[:, 0].max() == round(7 * stride) == 1796
    np.testing.assert_array_equal(grid.grid_rc[:, 1], np.round(grid.coords[:, 0] / stride).astype(int))


def test_cmu_tissue_tiles(cmu_path):
    s = open_slide(cmu_path)
    tissue = segment_tissue(s)
    grid = tile_slide(s, tissue, TilingConfig())
    full = tile_slide(s, None, TilingConfig())
    assert 0 < len(grid) < len(full)
    assert (grid.tissue_fraction >= TilingConfig().min_tissue_fraction).all()
    # Independent coverage check for every kept tile: shapely intersection with the tissue polygons.
    for (x, y), frac in zip(grid.coords, grid.tissue_fraction, strict=True):
        box = shapely.box(x, y, x + 257, y + 257)
        assert frac == pytest.approx(box.intersection(tissue.geometry).area / 257**2, abs=1e-5)
    print(f"CMU-1-Small-Region gpfm-128um: {len(grid)} of {len(full)} lattice tiles kept")


def test_tcga_level_choice(tcga_path):
    s = open_slide(tcga_path, mpp=0.25)
    g = tile_slide(s, None, TilingConfig())
    assert g.read_level == 1 and g.read_downsample == pytest.approx(s.level_downsamples[1])
    assert g.read_size_px == round(128 / (0.25 * s.level_downsamples[1])) == 256
    assert g.patch_size_level0 == 512
    g2 = tile_slide(open_slide(tcga_path, mpp=0.3), None, TilingConfig())
    assert g2.read_level == 0 and g2.read_size_px == round(128 / 0.3)  # 0.6 µm/px at level 1 is too coarse


def test_synthetic_keep_rule_fraction_holes_and_four_point(synthetic_pyramid):
    path, _ = synthetic_pyramid
    s = open_slide(path)  # 0.25 µm/px, 1200 × 1000
    cfg = TilingConfig(recipe="custom", target_mpp=0.5, tile_px=64, edge_policy="exclude", min_tissue_fraction=0.25)
    # 32 µm → 128 level-0 px. Tissue covers x ∈ [0, 320): columns 0, 1 fully, column 2 half (256..384 ∩ [0,320) = 64/128).
    strip = shapely.box(0, 0, 320, 1000)
    g = tile_slide(s, strip, cfg)
    assert set(g.grid_rc[:, 1].tolist()) == {0, 1, 2}
    np.testing.assert_allclose(np.unique(g.tissue_fraction), [0.5, 1.0])
    g60 = tile_slide(
        s, strip, TilingConfig(recipe="custom", target_mpp=0.5, tile_px=64, min_tissue_fraction=0.6)
    )
    assert set(g60.grid_rc[:, 1].tolist()) == {0, 1}
    # A hole covering exactly tile (row 1, col 0) removes that tile.
    holed = shapely.Polygon(strip.exterior.coords, [shapely.box(0, 128, 128, 256).exterior.coords])
    gh = tile_slide(s, holed, cfg)
    assert (1, 0) not in set(map(tuple, gh.grid_rc.tolist())) and len(gh) == len(g) - 1
    # Four-point rule: tissue only in the top-left quarter of tile (0, 0) → kept (point (32, 32) inside);
    # coverage 25% would also pass, so use a 20×20 px patch around (32, 32) (coverage 2.4%).
    speck = shapely.box(22, 22, 42, 42)
    four = tile_slide(
        s, speck, TilingConfig(recipe="custom", target_mpp=0.5, tile_px=64, keep_rule="clam-four-pt")
    )
    frac = tile_slide(s, speck, cfg)
    assert four.grid_rc.tolist() == [[0, 0]] and len(frac) == 0


def test_edges_exclude_and_pad(synthetic_pyramid):
    path, _ = synthetic_pyramid
    s = open_slide(path)
    cfg = dict(recipe="custom", target_mpp=0.5, tile_px=100)  # 200 level-0 px, stride 200
    ex = tile_slide(s, None, TilingConfig(**cfg, edge_policy="exclude"))
    assert len(ex) == (1200 // 200) * (1000 // 200) == 30
    pad = tile_slide(s, None, TilingConfig(**cfg, edge_policy="pad"))
    assert len(pad) == 30  # 1200 and 1000 are multiples of 200: no partial tile
    cfg = dict(recipe="custom", target_mpp=0.5, tile_px=96)  # 192 px: 6.25 columns, 5.2 rows
    ex, pad = (
        tile_slide(s, None, TilingConfig(**cfg, edge_policy="exclude")),
        tile_slide(s, None, TilingConfig(**cfg, edge_policy="pad")),
    )
    assert len(ex) == 6 * 5 and len(pad) == 7 * 6
    flagged = pad.tile_status == TILE_PADDED
    assert flagged.sum() == 7 * 6 - 6 * 5
    x, y = pad.coords[np.flatnonzero(flagged)[0]]
    tile = s.read_region(x, y, pad.read_level, (pad.read_size_px, pad.read_size_px))
    inside_w = (1200 - x) // 2 if x + 192 > 1200 else pad.read_size_px
    assert (tile[:, inside_w:] == 255).all()


def test_overlap_upsample_and_config_errors(synthetic_pyramid):
    path, _ = synthetic_pyramid
    s = open_slide(path)
    g = tile_slide(s, None, TilingConfig.from_recipe("gpfm-128um", overlap=64))
    assert g.config.recipe == "custom"
    assert g.stride_level0_exact == pytest.approx((256 - 64) * 0.5 / 0.25)
    with pytest.raises(ValueError, match="overlap"):
        TilingConfig(overlap=256)
    with pytest.raises(TilingError, match="finer than the scan.*--allow-upsample"):
        tile_slide(s, None, TilingConfig(recipe="custom", target_mpp=0.1, tile_px=256))
    up = tile_slide(s, None, TilingConfig(recipe="custom", target_mpp=0.1, tile_px=256, allow_upsample=True))
    assert up.read_level == 0 and up.read_size_px == round(25.6 / 0.25)
    lvl0 = tile_slide(s, None, TilingConfig.from_recipe("clam-level0-512"))
    assert lvl0.read_level == 0 and lvl0.read_size_px == 512 == lvl0.patch_size_level0
    assert lvl0.fov_um == pytest.approx(512 * 0.25)


def test_recipes_dir_names_and_hash():
    assert TilingConfig().dir_name() == "20x_256px_0px_overlap"
    assert TilingConfig.from_recipe("trident-112um").dir_name() == "20x_224px_0px_overlap"
    assert TilingConfig.from_recipe("clam-level0-512").dir_name() == "level0_512px_0px_overlap"
    assert TilingConfig(recipe="custom", target_mpp=0.3).dir_name() == "0.3mpp_256px_0px_overlap"
    base = tiling_config_sha256(TilingConfig(), "hsv", {"close_px": 4})
    assert base == tiling_config_sha256(TilingConfig(), "hsv", {"close_px": 4})
    assert base != tiling_config_sha256(TilingConfig(min_tissue_fraction=0.5), "hsv", {"close_px": 4})
    assert base != tiling_config_sha256(TilingConfig(), "hsv", {"close_px": 5})
    with pytest.raises(ValueError, match="known"):
        TilingConfig.from_recipe("nope")


def test_attrs_cover_the_spec(cmu_path):
    s = open_slide(cmu_path)
    attrs = tile_slide(s, segment_tissue(s), TilingConfig()).attrs(savetodir="job")
    missing = [k for k in SPEC_COORD_ATTRS if k not in attrs]
    assert not missing, missing
    assert attrs["level0_magnification"] == pytest.approx(10 / 0.499)  # derived, not binned to 20
    assert attrs["target_magnification"] == pytest.approx(20.0)
    assert attrs["coords_convention"] == "level0_xy_topleft" and attrs["seg_method"] == "hsv"
    assert math.isclose(attrs["read_downsample"], 1.0)
    assert (
        tile_slide(s, None, TilingConfig()).attrs(trident_binned_attrs=True)["level0_magnification"] == 20.0
    )
    with pytest.raises(ValueError, match="clam-compat needs a level-based tiling"):
        tile_slide(s, None, TilingConfig()).attrs(clam_compat=True)
    clam = tile_slide(s, None, TilingConfig.from_recipe("clam-level0-512")).attrs(clam_compat=True)
    assert (
        clam["patch_level"] == 0
        and list(clam["level_dim"]) == [2220, 2967]
        and list(clam["downsample"]) == [1, 1]
    )


def test_slide_bounds_limit_candidates(synthetic_pyramid, monkeypatch):
    path, _ = synthetic_pyramid
    s = open_slide(path)
    monkeypatch.setattr(type(s.handle), "bounds", property(lambda self: (250, 100, 600, 500)))
    cfg = TilingConfig(recipe="custom", target_mpp=0.5, tile_px=50)  # 100 level-0 px on the global lattice
    grid = tile_slide(s, None, cfg)
    # Lattice tiles that intersect x ∈ [250, 850), y ∈ [100, 600): columns 2..8, rows 1..5.
    assert sorted(set(grid.grid_rc[:, 1].tolist())) == list(range(2, 9))
    assert sorted(set(grid.grid_rc[:, 0].tolist())) == list(range(1, 6))
    attrs = grid.attrs()
    assert (attrs["bounds_x"], attrs["bounds_y"], attrs["bounds_w"], attrs["bounds_h"]) == (
        250,
        100,
        600,
        500,
    )
