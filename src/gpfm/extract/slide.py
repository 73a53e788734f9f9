"""One slide → features: the coordinate stage (tissue, tiles, pictures) and the embedding stage.

:func:`embed_slide` and :func:`write_slide_features` work on a single slide without any job directory (the
Python API); :func:`prepare_grid` is the coordinate stage as run inside a job directory.
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
from gpfm.wsi.qc import QCParams

log = logging.getLogger(__name__)

#: A slide fails when more than this fraction of its tiles cannot be read.
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
    qc: QCParams | None = None,
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
        qc: tile QC to score every tile with while it is read (None: no QC); the result's ``qc`` holds it.

    Raises:
        SlideReadError: too many unreadable tiles.
    """
    loader = tile_loader(slide, grid, batch_size=batch_size, workers=workers, block_k=block_k,
                         pin_memory=encoder.device.type == "cuda", qc=qc)
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
    """Attributes of the ``features`` dataset."""
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


@dataclass(frozen=True)
class QCSplit:
    """Which tiles of a slide QC keeps for the features and which it excludes (with reasons)."""

    keep: np.ndarray  # (N,) bool over the grid
    scores: np.ndarray  # (N, 4) float32, gpfm.wsi.qc.SCORE_COLUMNS
    reasons: np.ndarray  # (N,) uint8 codes into gpfm.wsi.qc.REASONS

    @property
    def n_excluded(self) -> int:
        """Tiles kept out of the features."""
        return int((~self.keep).sum())


def split_by_qc(result: EmbedResult, qc: QCParams | None) -> QCSplit | None:
    """The QC verdicts of an embedded slide (None when QC was off)."""
    from gpfm.wsi.qc import excluded_mask

    if qc is None or result.qc is None:
        return None
    reasons = result.qc[:, -1].astype(np.uint8)
    return QCSplit(~excluded_mask(reasons, qc), result.qc[:, :-1].astype(np.float32), reasons)


def write_slide_features(path: Path, grid: TileGrid, encoder: Encoder, result: EmbedResult, *,
                         run_id: str = "", qc: QCParams | None = None) -> Path:
    """Write one self-contained features file atomically (``complete=True`` last).

    With QC, only the tiles QC keeps become feature rows; ``qc_scores``/``qc_reason`` are row-aligned with
    them, and every excluded tile is listed in ``excluded_coords``/``excluded_reason``/``excluded_qc_scores``.
    """
    from gpfm.wsi import write_features
    from gpfm.wsi.qc import REASONS

    split = split_by_qc(result, qc)
    keep = np.ones(len(grid), dtype=bool) if split is None else split.keep
    kept = grid.select(keep) if split is not None else grid
    status = result.tile_status[keep]
    n_failed = int((status == 2).sum())
    attrs = feature_attrs(encoder, kept, savetodir=str(path.parent), run_id=run_id, n_failed_tiles=n_failed)
    extra: dict[str, np.ndarray] = {"valid_fraction": np.asarray(kept.valid_fraction, np.float32)}
    attrs["qc_preset"] = "off" if qc is None else qc.name
    if split is not None:
        attrs["qc_json"] = json.dumps(qc.to_dict(), sort_keys=True)
        attrs["qc_reasons"] = json.dumps(list(REASONS))
        attrs["n_excluded_tiles"] = split.n_excluded
        extra.update({
            "qc_scores": split.scores[keep], "qc_reason": split.reasons[keep],
            "excluded_coords": np.asarray(grid.coords, np.int64)[~keep].reshape(-1, 2),
            "excluded_reason": split.reasons[~keep], "excluded_qc_scores": split.scores[~keep],
        })
    return write_features(path, result.features[keep], kept.coords, kept.attrs(savetodir=str(path.parent)), attrs,
                          tile_status=status, extra_datasets=extra)


def _write_pictures(slide: Any, tissue: Any, grid: TileGrid, layout: JobLayout, thumbnail_px: int) -> None:
    """Thumbnail, contours, QuPath GeoJSON and the tile-grid overlay (each written atomically)."""
    from gpfm.wsi import geojson, viz

    sid = grid.slide_id
    thumb, scale = viz.thumbnail_image(slide, max_side=thumbnail_px)
    viz.save_jpeg(thumb, layout.thumbnail(sid))
    viz.save_jpeg(viz.contours_image(thumb, scale, tissue), layout.contours(sid))
    geojson.write_geojson(layout.contours_geojson(sid), tissue)
    viz.save_jpeg(viz.tile_grid_image(thumb, scale, grid, tissue=tissue), layout.visualization(sid))


def write_qc_overlay(grid: TileGrid, result: EmbedResult, qc: QCParams | None, thumbnail: Path,
                     out_path: Path) -> Path | None:
    """Draw the QC verdicts over the slide's saved thumbnail (None when QC was off or there is no thumbnail)."""
    from PIL import Image

    from gpfm.wsi import viz

    split = split_by_qc(result, qc)
    if split is None or not thumbnail.is_file():
        return None
    with Image.open(thumbnail) as image:
        thumb = np.asarray(image.convert("RGB"))
    scale = grid.level0_width / thumb.shape[1]
    caption = f"{grid.slide_id} | QC {qc.name}: {len(grid) - split.n_excluded} of {len(grid)} tiles kept"
    picture = viz.qc_overlay_image(thumb, scale, grid.coords, grid.patch_size_level0, split.reasons, ~split.keep,
                                   caption)
    return viz.save_jpeg(picture, out_path)


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
    from gpfm.wsi.coverage import tissue_coverage
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
    coverage = tissue_coverage(grid, tissue)
    write_coords(patches, grid, {"savetodir": str(patches.parent), "tissue_coverage": coverage})
    return grid, True


def empty_result(encoder: Encoder) -> EmbedResult:
    """The result for a slide without kept tiles (a complete file with zero rows, not an error)."""
    return EmbedResult(np.zeros((0, encoder.embed_dim), np.float32), np.zeros(0, np.uint8), 0, 0.0, 0.0, 0.0)
