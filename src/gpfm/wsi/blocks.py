"""Batched block reads: one ``read_region`` per k×k block of neighbouring tiles, cut in memory.

Tile i lives at level pixel ``(floor(x_i / ds), floor(y_i / ds))`` of the read level (``ds =
grid.read_downsample``) — exactly where ``slide.read_region(x_i, y_i, read_level, (s, s))`` starts — so a tile
cut from a block is bit-identical to its own read on every backend that reads integer level pixels
(tiffslide, DICOM, images, OpenSlide at integer downsamples; see the OpenSlide backend note otherwise).

Tiles are grouped by lattice cell ``(row // k, col // k)``; a group becomes one block read when it holds at
least ``min_fill`` (50%) of the k² cells, otherwise each of its tiles is read alone. Blocks are returned in
the order of their first tile, and each block lists its tiles in the grid's (row-major) order.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gpfm.wsi.readers.slide import TILE_FAILED, TILE_PADDED, Slide, level_origin


@dataclass(frozen=True)
class Block:
    """One region read at ``level``: origin (lx, ly) and size in level px, and the tiles cut from it."""

    tile_indices: np.ndarray  # (n,) int64 indices into the grid
    offsets: np.ndarray  # (n, 2) int64 (x, y) of each tile inside the region, level px
    level: int
    lx: int
    ly: int
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.tile_indices.shape[0])


def tile_level_origins(grid) -> np.ndarray:
    """(N, 2) int64 level-pixel origins of the grid's tiles at its read level."""
    ds = float(grid.read_downsample)
    return np.array(
        [[level_origin(x, ds), level_origin(y, ds)] for x, y in grid.coords.tolist()], dtype=np.int64
    ).reshape(-1, 2)


def _block(indices: np.ndarray, origins: np.ndarray, size: int, level: int) -> Block:
    sub = origins[indices]
    lx, ly = int(sub[:, 0].min()), int(sub[:, 1].min())
    width = int(sub[:, 0].max()) - lx + size
    height = int(sub[:, 1].max()) - ly + size
    return Block(indices.astype(np.int64), sub - np.array([lx, ly]), level, lx, ly, width, height)


def plan_blocks(grid, k: int = 4, min_fill: float = 0.5) -> list[Block]:
    """Group the grid's tiles into k×k blocks (≥ ``min_fill`` occupied) and single-tile reads.

    Args:
        grid: a :class:`~gpfm.wsi.tiling.TileGrid` (uses ``grid_rc``, ``coords``, read level and size).
        k: block side in tiles (1 = one read per tile).
        min_fill: minimum fraction of the k² cells that must be kept tiles to read the block at once.
    """
    if k < 1:
        raise ValueError(f"block size k must be ≥ 1, got {k}")
    n = len(grid)
    if n == 0:
        return []
    origins = tile_level_origins(grid)
    size = int(grid.read_size_px)
    rc = np.asarray(grid.grid_rc, dtype=np.int64).reshape(-1, 2)
    keys = (rc[:, 0] // k) * (int(rc[:, 1].max()) // k + 1) + rc[:, 1] // k
    order = np.argsort(keys, kind="stable")
    blocks: list[Block] = []
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    for group in np.split(order, bounds):
        if k > 1 and len(group) >= min_fill * k * k:
            blocks.append(_block(np.sort(group), origins, size, grid.read_level))
        else:
            blocks.extend(_block(np.array([i]), origins, size, grid.read_level) for i in np.sort(group))
    blocks.sort(key=lambda b: int(b.tile_indices[0]))
    return blocks


def _cut(region: np.ndarray, block: Block, size: int) -> np.ndarray:
    tiles = np.empty((len(block), size, size, 3), dtype=np.uint8)
    for j, (ox, oy) in enumerate(block.offsets.tolist()):
        tiles[j] = region[oy : oy + size, ox : ox + size]
    return tiles


def read_block_tiles(slide: Slide, grid, block: Block) -> tuple[np.ndarray, np.ndarray]:
    """One region read for ``block`` → (tile indices, tiles uint8 (n, read_size_px, read_size_px, 3))."""
    size = int(grid.read_size_px)
    region = slide.read_level_region(block.level, block.lx, block.ly, (block.width, block.height))
    return block.tile_indices, _cut(region, block, size)


def read_block_tiles_safe(slide: Slide, grid, block: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`read_block_tiles` plus per-tile status (0 ok, 2 failed).

    A failed block read falls back to per-tile
    :meth:`Slide.read_region_safe` (retry, finer level, then white + ``TILE_FAILED``).

    Edge-padding flags are not added here; combine with ``grid.tile_status`` (max of both).
    """
    size = int(grid.read_size_px)
    status = np.zeros(len(block), dtype=np.uint8)
    try:
        indices, tiles = read_block_tiles(slide, grid, block)
        return indices, tiles, status
    except Exception:  # noqa: BLE001 - decoder errors come in many types; recover tile by tile
        pass
    tiles = np.empty((len(block), size, size, 3), dtype=np.uint8)
    for j, i in enumerate(block.tile_indices.tolist()):
        x, y = grid.coords[i].tolist()
        tiles[j], status[j] = slide.read_region_safe(x, y, block.level, (size, size))
    return block.tile_indices, tiles, np.minimum(status, TILE_FAILED).astype(np.uint8)


def fill_outside(slide: Slide, grid, indices: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """Paint the part of each edge tile that lies past the image with the slide's background colour (in place).

    Readers return white outside the image; the background of a scan is glass, which is rarely pure white, so
    padded tiles get ``grid.background_rgb`` there instead (what the tissue detector saw around the tissue).
    """
    padded = np.flatnonzero(np.asarray(grid.tile_status)[indices] == TILE_PADDED)
    if padded.size == 0:
        return tiles
    level = int(grid.read_level)
    lw, lh = slide.level_dimensions[level]
    origins = tile_level_origins(grid.select(np.asarray(indices)[padded]))
    size = tiles.shape[1]
    fill = np.asarray(grid.background_rgb, dtype=np.uint8)
    for j, (lx, ly) in zip(padded.tolist(), origins.tolist(), strict=True):
        valid_w, valid_h = max(0, min(size, lw - lx)), max(0, min(size, lh - ly))
        tiles[j, :, valid_w:] = fill
        tiles[j, valid_h:, :] = fill
    return tiles


def read_tiles(slide: Slide, grid, indices: np.ndarray | None = None, k: int = 4) -> np.ndarray:
    """Tiles of ``grid`` (all, or ``indices``) in grid order, read through blocks; (n, s, s, 3) uint8."""
    wanted = np.arange(len(grid)) if indices is None else np.asarray(indices, dtype=np.int64)
    size = int(grid.read_size_px)
    out = np.empty((len(wanted), size, size, 3), dtype=np.uint8)
    position = {int(i): j for j, i in enumerate(wanted.tolist())}
    sub = grid.select(wanted) if indices is not None else grid
    for block in plan_blocks(sub, k):
        idx, tiles = read_block_tiles(slide, sub, block)
        fill_outside(slide, sub, idx, tiles)
        for local, tile in zip(idx.tolist(), tiles, strict=True):
            out[position[int(wanted[local])]] = tile
    return out


def resize_tiles(tiles: np.ndarray, size: int) -> np.ndarray:
    """Resample (n, s, s, 3) uint8 tiles to ``size`` px once (area filter down, bicubic up)."""
    if tiles.shape[1] == size and tiles.shape[2] == size:
        return tiles
    interp = cv2.INTER_AREA if tiles.shape[1] > size else cv2.INTER_CUBIC
    return (
        np.stack([cv2.resize(t, (size, size), interpolation=interp) for t in tiles])
        if len(tiles)
        else (np.empty((0, size, size, 3), np.uint8))
    )
