"""Plain-image backend (PNG, JPEG, BMP, flat TIFF): one level, accepted **only with an explicit mpp**.

Ordinary image files carry no trustworthy µm/px (a 72-dpi default would mean 352.8 µm/px), so this
backend reports no mpp candidates and :func:`gpfm.wsi.open_slide` demands ``mpp=``. The image is decoded
once on first read and kept in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpfm.wsi.mpp import MppCandidate
from gpfm.wsi.readers.base import SlideBackend, composite_on_white, paste_clipped

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageBackend(SlideBackend):
    """A flat raster image read with Pillow."""

    name = "image"

    def __init__(self, path: Path, **options: object) -> None:
        super().__init__(path)
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # whole-slide-sized PNG/TIFF exports are legitimate here
        with Image.open(path) as img:
            self._mode = img.mode
            self.level_dimensions = ((int(img.width), int(img.height)),)
            self.properties = {"image.format": str(img.format), "image.mode": img.mode}
        self.level_downsamples = (1.0,)
        self._pixels: np.ndarray | None = None

    def mpp_candidates(self, extra_keys: tuple[str, ...] = ()) -> list[MppCandidate]:
        """µm/px readings in lookup order."""
        return []

    def _load(self) -> np.ndarray:
        if self._pixels is None:
            from PIL import Image

            with Image.open(self.path) as img:
                if img.mode not in ("RGB", "RGBA", "L", "LA"):
                    img = img.convert("RGBA" if "transparency" in img.info or "A" in img.mode else "RGB")
                self._pixels = composite_on_white(np.asarray(img))
        return self._pixels

    def read_level(self, level: int, lx: int, ly: int, width: int, height: int) -> np.ndarray:
        """Integer level-space read; white outside the level."""
        pixels = self._load()
        return paste_clipped(
            self.level_dimensions[0], lx, ly, width, height, lambda x0, y0, x1, y1: pixels[y0:y1, x0:x1]
        )

    @property
    def version(self) -> str:
        """Reader library and version."""
        import PIL

        return f"pillow {PIL.__version__}"

    def close(self) -> None:
        """Release the file handle."""
        self._pixels = None
