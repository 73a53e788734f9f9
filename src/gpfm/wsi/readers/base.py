"""The small reader protocol every backend implements, and the pixel helpers they share.

A backend (one file per library under ``gpfm.wsi.readers``) opens one file and answers four things: the
pyramid (``level_dimensions``, ``level_downsamples``), its raw ``properties``, its µm/px readings
(``mpp_candidates``) and :meth:`SlideBackend.read_level` — an **integer level-space** read returning RGB uint8
with transparent and out-of-bounds pixels composited onto white. Everything else (mpp policy, level-0
coordinates, retries, pickling) lives once in :class:`gpfm.wsi.readers.slide.Slide`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from gpfm.wsi.mpp import MppCandidate, candidates_from_properties


class SlideBackend(abc.ABC):
    """One open slide file in one library. Not picklable and not fork-safe: :class:`Slide` reopens it."""

    name: ClassVar[str]

    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: Mapping[str, object]

    def __init__(self, path: Path, **options: object) -> None:
        self.path = Path(path)

    @abc.abstractmethod
    def read_level(self, level: int, lx: int, ly: int, width: int, height: int) -> np.ndarray:
        """Pixels of ``level`` from (lx, ly), size (width, height): (h, w, 3) uint8, white outside."""

    def mpp_candidates(self, extra_keys: tuple[str, ...] = ()) -> list[MppCandidate]:
        """µm/px readings in lookup order."""
        return candidates_from_properties(self.properties, extra_keys=extra_keys)

    @property
    def bounds(self) -> tuple[int, int, int, int] | None:
        """Non-empty region (x, y, w, h) in level-0 px when the format defines one (MRXS), else None."""
        return None

    @property
    def version(self) -> str:
        """Reader library and version, recorded in outputs."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file handle."""


def composite_on_white(pixels: np.ndarray) -> np.ndarray:
    """RGB(A) uint8 → RGB uint8 with alpha composited onto white (never black).

    ``out = rgb · a/255 + 255 · (1 − a/255)`` for straight (non-premultiplied) alpha, rounded.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1]
    if channels == 1:
        return np.repeat(pixels, 3, axis=-1).astype(np.uint8, copy=False)
    if channels == 2:  # grey + alpha
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=-1), pixels[..., 1:]], axis=-1)
        channels = 4
    if channels == 3:
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    alpha8 = pixels[..., 3]
    if alpha8.min() == 255:  # the common case: opaque, no arithmetic
        return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
    rgb = pixels[..., :3].astype(np.uint16)
    alpha = alpha8[..., None].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def composite_premultiplied_on_white(bgra: np.ndarray) -> np.ndarray:
    """Premultiplied B, G, R, A bytes (OpenSlide's native ARGB words on little-endian) → RGB on white.

    With premultiplied colour C ≤ A the exact composite is ``C + (255 − A)``: no division, no rounding.
    """
    import cv2

    bgra = np.ascontiguousarray(bgra)
    rgb = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)  # 5-6× faster than a strided numpy copy of a 1k² block
    alpha = bgra[..., 3]
    if alpha.min() == 255:
        return rgb
    inverse = 255 - alpha
    return cv2.add(rgb, cv2.merge([inverse, inverse, inverse]))  # saturating: exactly clip(C + 255 − A)


def paste_clipped(
    level_size: tuple[int, int], lx: int, ly: int, width: int, height: int, fetch
) -> np.ndarray:
    """White (height, width, 3) canvas; the in-bounds part is ``fetch(x0, y0, x1, y1)`` (level px)."""
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    lw, lh = level_size
    x0, y0 = max(lx, 0), max(ly, 0)
    x1, y1 = min(lx + width, lw), min(ly + height, lh)
    if x1 > x0 and y1 > y0:
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = fetch(x0, y0, x1, y1)
    return out
