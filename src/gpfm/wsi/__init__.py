"""Slide side of gpfm: read slides, find tissue, tile at an exact µm/px, store coordinates and features.

Public API (stable names, used by :mod:`gpfm.extract`)::

    open_slide(path, mpp=None, backend="auto") -> Slide          # readers/: openslide tiffslide dicom image
    Slide.read_region(x0, y0, level, (w, h)) -> uint8 (h, w, 3)  # level-0 top-left, white outside
    segment_tissue(slide, method="hsv", **params) -> TissueMask  # tissue.py (polygons in level-0 px)
    TilingConfig.from_recipe("gpfm-128um"); tile_slide(slide, tissue, config) -> TileGrid   # tiling.py
    write_coords / read_coords / write_features / read_features / is_complete                # h5io.py
    plan_blocks(grid, k) / read_block_tiles(slide, grid, block)  # blocks.py: one read per k×k tile block
    write_geojson / read_geojson                                  # geojson.py (QuPath-compatible)
    thumbnail_image / contours_image / tile_grid_image / feature_map_image / save_jpeg     # viz.py

Data flows one way: this package knows no models.
"""

from gpfm.wsi.blocks import (
    Block,
    plan_blocks,
    read_block_tiles,
    read_block_tiles_safe,
    read_tiles,
    resize_tiles,
)
from gpfm.wsi.errors import (
    MissingMppError,
    SlideReadError,
    TilingError,
    TruncatedSlideError,
    UnreadableSlideError,
    UnsupportedSlideError,
    WsiError,
)
from gpfm.wsi.geojson import (
    read_geojson,
    tiles_to_geojson,
    tissue_to_geojson,
    write_geojson,
    write_tiles_geojson,
)
from gpfm.wsi.h5io import (
    COORDS,
    FEATURES,
    GRID_RC,
    TILE_STATUS,
    TISSUE_FRACTION,
    is_complete,
    load_tile_grid,
    open_h5,
    read_coords,
    read_features,
    read_tiling,
    write_coords,
    write_features,
)
from gpfm.wsi.mpp import MppInfo, is_sane_mpp
from gpfm.wsi.readers import BACKENDS, TILE_FAILED, TILE_OK, TILE_PADDED, Slide, open_slide
from gpfm.wsi.tiling import (
    RECIPES,
    TileGrid,
    TilingConfig,
    tile_slide,
    tiling_config_dict,
    tiling_config_sha256,
)
from gpfm.wsi.tissue import PRESETS, TileQC, TissueMask, TissueParams, segment_tissue, tile_is_tissue, tile_qc
from gpfm.wsi.viz import contours_image, feature_map_image, save_jpeg, thumbnail_image, tile_grid_image

__all__ = [
    "BACKENDS",
    "COORDS",
    "FEATURES",
    "GRID_RC",
    "PRESETS",
    "RECIPES",
    "TILE_FAILED",
    "TILE_OK",
    "TILE_PADDED",
    "TILE_STATUS",
    "TISSUE_FRACTION",
    "Block",
    "MissingMppError",
    "MppInfo",
    "Slide",
    "SlideReadError",
    "TileGrid",
    "TileQC",
    "TilingConfig",
    "TilingError",
    "TissueMask",
    "TissueParams",
    "TruncatedSlideError",
    "UnreadableSlideError",
    "UnsupportedSlideError",
    "WsiError",
    "contours_image",
    "feature_map_image",
    "is_complete",
    "is_sane_mpp",
    "load_tile_grid",
    "open_h5",
    "open_slide",
    "plan_blocks",
    "read_block_tiles",
    "read_block_tiles_safe",
    "read_coords",
    "read_features",
    "read_geojson",
    "read_tiles",
    "read_tiling",
    "resize_tiles",
    "save_jpeg",
    "segment_tissue",
    "thumbnail_image",
    "tile_grid_image",
    "tile_is_tissue",
    "tile_qc",
    "tile_slide",
    "tiles_to_geojson",
    "tiling_config_dict",
    "tiling_config_sha256",
    "tissue_to_geojson",
    "write_coords",
    "write_features",
    "write_geojson",
    "write_tiles_geojson",
]
