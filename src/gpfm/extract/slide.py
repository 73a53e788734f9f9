"""One slide → features: the coordinate stage (tissue, tiles, pictures) and the embedding stage.

:func:`embed_slide` and :func:`write_slide_features` work on a single slide without any job directory (the
Python API of spec §9); :func:`prepare_grid` is the coordinate stage as run inside a job directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpfm.extract.dataset import rebatch, tile_loader
from gpfm.extract.embed import EmbedResult, embed_batches
from gpfm.extract.layout import JobLayout
from gpfm.models.encoder import Encoder
from gpfm.wsi import (
    SlideReadError,
    TileGrid,
    TilingConfig,
    is_complete,
    load_tile_grid,
    tile_slide,
    write_coords,
)

log = logging.getLogger(__name__)

#: A slide fails when more than this fraction of its tiles cannot be read (spec §1.1).
DEFAULT_MAX_FAILED_FRACTION = 0.01


@dataclass(frozen=True)
class SegmentationSettings:
    """Tissue detection method and parameters (passed to :func:`gpfm.wsi.tissue.segment_tissue`)."""

    method: str = "hsv"
    params: dict[str, Any] = field(default_factory=dict)


def embed_slide(
    slide: Any,
    grid: TileGrid,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    workers: int = 0,
    block_k: int = 4,
    on_batch: Callable[[int], None] | None = None,
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
) -> EmbedResult:
    """Embed every tile of ``grid`` (row-aligned with ``grid.coords``).

    Args:
        slide: the :class:`~gpfm.wsi.Slide` the grid was made on.
        grid: kept tiles.
        encoder: any registered encoder (:func:`gpfm.models.create_encoder`).
        batch_size: most tiles per encoder batch.
        workers: DataLoader reader processes (0 = read in this process).
        block_k: read k×k blocks of neighbouring tiles with one region read.
        on_batch: progress callback with the number of tiles done.
        max_failed_fraction: fail the slide when more tiles than this fraction were unreadable.

    Raises:
        SlideReadError: too many unreadable tiles.
    """
    loader = tile_loader(slide, grid, batch_size=batch_size, workers=workers, block_k=block_k,
                         pin_memory=encoder.device.type == "cuda")
    batches = loader if encoder.device.type == "cuda" else rebatch(loader, batch_size)
    result = embed_batches(encoder, batches, len(grid), on_batch=on_batch)
    n_failed = int((result.tile_status == 2).sum())
    if len(grid) and n_failed / len(grid) > max_failed_fraction:
        raise SlideReadError(
            f"{Path(str(slide.path)).name}: {n_failed} of {len(grid)} tiles unreadable "
            f"(> {max_failed_fraction:.1%}); the file is damaged — re-export or re-scan it"
        )
    return result


def feature_attrs(encoder: Encoder, grid: TileGrid, *, savetodir: str = "", run_id: str = "",
                  n_failed_tiles: int = 0) -> dict[str, Any]:
    """Attributes of the ``features`` dataset (spec §4.3)."""
    import gpfm

    meta = encoder.metadata()
    transform = {**meta["transform"], "resize_device": encoder.device.type, "read_size_px": int(grid.read_size_px),
                 "read_level": int(grid.read_level)}
    return {
        "name": grid.slide_id,
        "savetodir": savetodir,
        "encoder": meta["encoder"],
        "encoder_version": meta["encoder_version"],
        "weights_sha256": meta["weights_sha256"],
        "checkpoint_format": meta["checkpoint_format"],
        "pooling": meta["pooling"],
        "dim": int(meta["dim"]),
        "precision": meta["precision"],
        "transform_json": json.dumps(transform, sort_keys=True),
        "tiling_recipe": grid.config.recipe,
        "tiling_config_sha256": grid.tiling_config_sha256,
        "n_failed_tiles": int(n_failed_tiles),
        "is_pathology": bool(meta["is_pathology"]),
        "torch_version": meta["torch_version"],
        "timm_version": meta["timm_version"],
        "gpfm_version": gpfm.__version__,
        "run_id": run_id,
    }


def write_slide_features(path: Path, grid: TileGrid, encoder: Encoder, result: EmbedResult, *,
                         run_id: str = "") -> Path:
    """Write one self-contained features file atomically (``complete=True`` last)."""
    from gpfm.wsi import write_features

    n_failed = int((result.tile_status == 2).sum())
    attrs = feature_attrs(encoder, grid, savetodir=str(path.parent), run_id=run_id, n_failed_tiles=n_failed)
    return write_features(path, result.features, grid.coords, grid.attrs(savetodir=str(path.parent)), attrs,
                          tile_status=result.tile_status)


def _write_pictures(slide: Any, tissue: Any, grid: TileGrid, layout: JobLayout, thumbnail_px: int) -> None:
    """Thumbnail, contours, QuPath GeoJSON and the tile-grid overlay (each written atomically)."""
    from gpfm.wsi import geojson, viz

    sid = grid.slide_id
    thumb, scale = viz.thumbnail_image(slide, max_side=thumbnail_px)
    viz.save_jpeg(thumb, layout.thumbnail(sid))
    viz.save_jpeg(viz.contours_image(thumb, scale, tissue), layout.contours(sid))
    geojson.write_geojson(layout.contours_geojson(sid), tissue)
    viz.save_jpeg(viz.tile_grid_image(thumb, scale, grid, tissue=tissue), layout.visualization(sid))


def write_feature_map(slide: Any, features_path: Path, out_path: Path, thumbnail_px: int = 1024) -> Path:
    """The PCA feature map of a features file: each tile coloured by its first three PCA components."""
    from gpfm.wsi import read_features, viz

    data = read_features(features_path)
    thumb, scale = viz.thumbnail_image(slide, max_side=thumbnail_px)
    patch = int(data["coords_attrs"]["patch_size_level0"])
    image = viz.feature_map_image(data["coords"], data["features"], thumb, scale, patch)
    return viz.save_jpeg(image, out_path)


def prepare_grid(
    slide: Any,
    layout: JobLayout,
    tiling: TilingConfig,
    segmentation: SegmentationSettings,
    tiling_sha: str,
    *,
    overwrite: bool = False,
    thumbnail_px: int = 1024,
) -> tuple[TileGrid, bool]:
    """The slide's tile grid: loaded from its coordinates file when complete for this configuration, else made.

    Making it runs tissue detection, tiling, and writes the pictures, the GeoJSON and ``*_patches.h5``.

    Returns:
        (grid, made) — ``made`` is False when existing coordinates were reused.
    """
    from gpfm.wsi.tissue import segment_tissue

    patches = layout.patches(slide.slide_id)
    if not overwrite and is_complete(patches, tiling_sha):
        return load_tile_grid(patches), False
    tissue = segment_tissue(slide, method=segmentation.method, **segmentation.params)
    grid = tile_slide(slide, tissue, tiling)
    if grid.tiling_config_sha256 != tiling_sha:
        raise RuntimeError(
            f"internal: tiling hash {grid.tiling_config_sha256[:12]} differs from the job's {tiling_sha[:12]}; "
            "segmentation parameters were not canonical"
        )
    _write_pictures(slide, tissue, grid, layout, thumbnail_px)
    write_coords(patches, grid, {"savetodir": str(patches.parent)})
    return grid, True


def empty_result(encoder: Encoder) -> EmbedResult:
    """The result for a slide without kept tiles (a complete file with zero rows, not an error)."""
    return EmbedResult(np.zeros((0, encoder.embed_dim), np.float32), np.zeros(0, np.uint8), 0, 0.0, 0.0, 0.0)
