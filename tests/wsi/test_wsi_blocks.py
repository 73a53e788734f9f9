"""Block reads: one region per k×k block, tiles cut in memory equal per-tile reads exactly."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from gpfm.wsi import (
    TILE_FAILED,
    TilingConfig,
    open_slide,
    plan_blocks,
    read_block_tiles,
    read_block_tiles_safe,
    read_tiles,
    resize_tiles,
    segment_tissue,
    tile_slide,
)


def _per_tile(slide, grid):
    """One plain read per tile, then the part past the image painted with the background (by hand)."""
    size = (grid.read_size_px, grid.read_size_px)
    tiles = np.stack([slide.read_region(x, y, grid.read_level, size) for x, y in grid.coords.tolist()])
    width, height = slide.level_dimensions[grid.read_level]
    for tile, (x, y) in zip(tiles, grid.coords.tolist(), strict=True):
        lx, ly = slide.level_origin(x, grid.read_level), slide.level_origin(y, grid.read_level)
        tile[:, max(0, width - lx):] = grid.background_rgb
        tile[max(0, height - ly):, :] = grid.background_rgb
    return tiles


def test_edge_tiles_are_padded_with_the_slide_background_not_white_or_black(cmu_path):
    s = open_slide(cmu_path)
    grid = tile_slide(s, segment_tissue(s), TilingConfig())
    padded = np.flatnonzero(grid.tile_status == 1)
    assert padded.size and (grid.valid_fraction[padded] < 1).all() and (grid.valid_fraction[grid.tile_status == 0] == 1).all()
    assert grid.background_rgb != (255, 255, 255) and min(grid.background_rgb) > 200  # CMU's glass, estimated
    tiles = read_tiles(s, grid, padded)
    outside = tiles[:, -2:, -2:].reshape(-1, 3)  # bottom-right corner: past the image for every edge tile
    assert (outside == np.array(grid.background_rgb, np.uint8)).all()


def test_cmu_block_tiles_equal_per_tile_reads(cmu_path):
    s = open_slide(cmu_path)
    grid = tile_slide(s, segment_tissue(s), TilingConfig())
    blocks = plan_blocks(grid, k=4)
    assert sum(len(b) for b in blocks) == len(grid)
    assert len(blocks) < len(grid)  # fewer reads than tiles
    np.testing.assert_array_equal(read_tiles(s, grid, k=4), _per_tile(s, grid))


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_synthetic_level1_blocks_match_level_array(synthetic_pyramid, backend):
    path, levels = synthetic_pyramid
    s = open_slide(path, backend=backend)
    cfg = TilingConfig(recipe="custom", target_mpp=0.5, tile_px=60, edge_policy="exclude")  # 120 px, 60 at level 1
    grid = tile_slide(s, shapely.box(0, 0, 1200, 700), cfg)
    assert grid.read_level == 1 and grid.read_size_px == 60
    tiles = read_tiles(s, grid, k=4)
    for (x, y), tile in zip(grid.coords.tolist(), tiles, strict=True):
        np.testing.assert_array_equal(tile, levels[1][y // 2 : y // 2 + 60, x // 2 : x // 2 + 60])
    np.testing.assert_array_equal(tiles, _per_tile(s, grid))


def test_tcga_level1_tiffslide_blocks_exact(tcga_path):
    s = open_slide(tcga_path, mpp=0.25, backend="tiffslide")  # level 1 downsample 2.0005
    grid = tile_slide(s, segment_tissue(s), TilingConfig())
    assert grid.read_level == 1
    np.testing.assert_array_equal(read_tiles(s, grid, k=4), _per_tile(s, grid))


def test_plan_blocks_fill_rule(synthetic_pyramid):
    path, _ = synthetic_pyramid
    s = open_slide(path)
    cfg = TilingConfig(recipe="custom", target_mpp=0.5, tile_px=50)  # 100 px tiles: 12 × 10 lattice
    full = tile_slide(s, None, cfg)
    # Keep all of the first 4×4 cell block, 8 of the second (50% → block), 7 of the third (→ singles).
    rc = full.grid_rc
    keep = (rc[:, 0] < 4) & (rc[:, 1] < 4)
    keep |= (rc[:, 0] < 2) & (rc[:, 1] >= 4) & (rc[:, 1] < 8)
    keep |= (rc[:, 0] < 2) & (rc[:, 1] >= 8) & ~((rc[:, 0] == 1) & (rc[:, 1] == 11))
    grid = full.select(keep)
    sizes = sorted(len(b) for b in plan_blocks(grid, k=4))
    assert sizes == [1] * 7 + [8, 16]
    assert all(len(b) == 1 for b in plan_blocks(grid, k=1))
    block = max(plan_blocks(grid, k=4), key=len)
    assert (block.width, block.height) == (4 * grid.read_size_px, 4 * grid.read_size_px)
    idx, tiles = read_block_tiles(s, grid, block)
    assert list(idx) == sorted(idx) and tiles.shape == (16, 50, 50, 3)


def test_safe_block_read_falls_back_per_tile(synthetic_pyramid, monkeypatch):
    path, levels = synthetic_pyramid
    s = open_slide(path, backend="tiffslide")
    grid = tile_slide(s, None, TilingConfig(recipe="custom", target_mpp=0.5, tile_px=50))
    block = max(plan_blocks(grid, k=4), key=len)
    backend_cls = type(s.handle)
    monkeypatch.setattr(backend_cls, "read_level", lambda self, *a: (_ for _ in ()).throw(OSError("corrupt")))
    idx, tiles, status = read_block_tiles_safe(s, grid, block)
    assert (status == TILE_FAILED).all() and (tiles == 255).all()
    monkeypatch.undo()
    idx, tiles, status = read_block_tiles_safe(s, grid, block)
    assert (status == 0).all()
    np.testing.assert_array_equal(tiles, _per_tile(s, grid.select(idx)))


def test_resize_tiles():
    tiles = np.random.default_rng(0).integers(0, 255, (3, 257, 257, 3), dtype=np.uint8)
    assert resize_tiles(tiles, 256).shape == (3, 256, 256, 3)
    assert resize_tiles(tiles, 257) is tiles
