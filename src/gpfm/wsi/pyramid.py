"""Write an RGB image as a tiled, pyramidal TIFF with correct resolution tags (readable by OpenSlide and tiffslide).

Used to turn plain images (mosaics of real slides, edited copies) into whole-slide files: level 0 plus
levels downsampled by 2 until the longest side is at most ``min_side``, each tiled, JPEG (or another codec)
compressed, with X/YResolution in pixels per centimetre so every reader finds the µm/px (no ``--mpp`` needed).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from gpfm.atomic import atomic_path


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    mpp: float,
    *,
    tile: int = 256,
    min_side: int = 1024,
    compression: str = "jpeg",
    quality: int = 90,
) -> Path:
    """Write ``rgb`` (H, W, 3) uint8 at ``mpp`` µm/px as a pyramidal tiled TIFF, atomically.

    Args:
        path: output ``.tif``/``.tiff``.
        rgb: level-0 pixels.
        mpp: µm/px of level 0 (written as X/YResolution in px/cm).
        tile: TIFF tile side (a multiple of 16).
        min_side: stop adding levels once the longest side is at most this.
        compression: a tifffile codec name (``jpeg``, ``zlib``, ``none``).
        quality: JPEG quality.

    Returns:
        The written path.
    """
    import tifffile

    rgb = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if not mpp > 0:
        raise ValueError(f"{path}: mpp must be positive, got {mpp}")
    levels = [rgb]
    while max(levels[-1].shape[:2]) > min_side:
        prev = levels[-1]
        levels.append(cv2.resize(prev, (max(1, prev.shape[1] // 2), max(1, prev.shape[0] // 2)),
                                 interpolation=cv2.INTER_AREA))
    codec = None if compression == "none" else compression
    args = {"compressionargs": {"level": quality}} if codec == "jpeg" else {}
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=rgb.nbytes > 3_500_000_000) as tif:
        for i, level in enumerate(levels):
            px_per_cm = 1e4 / (mpp * (rgb.shape[1] / level.shape[1]))
            tif.write(level, photometric="rgb", tile=(tile, tile), compression=codec,
                      resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER",
                      subfiletype=0 if i == 0 else 1, metadata=None, **args)
    return Path(path)
