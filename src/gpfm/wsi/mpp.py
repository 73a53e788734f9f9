"""µm/px discovery: lookup order, sanity range, provenance.

Lookup order over a backend's metadata:

1. the reader's normalised value (``openslide.mpp-x``/``-y``), source ``openslide``;
2. vendor keys (Aperio ``MPP``, MIRAX, Philips pixel spacing, DICOM pixel spacing), source ``vendor:<key>``;
3. TIFF ``XResolution``/``YResolution`` with ``ResolutionUnit``: centimetre → 10,000/value µm/px,
   inch → 25,400/value, source ``tiff_resolution``;
4. user-supplied property keys (``mpp_keys``), source ``vendor:<key>``.

A value outside [0.05, 20] µm/px (e.g. a 72-dpi TIFF default, 352.8 µm/px) is treated as missing. An
explicit value (``--mpp`` or a manifest column) always wins and is recorded as ``cli_override`` or
``manifest``. Missing mpp raises :class:`~gpfm.wsi.errors.MissingMppError`; there is no level-0 fallback.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpfm.wsi.errors import MissingMppError

log = logging.getLogger(__name__)

MPP_MIN = 0.05
MPP_MAX = 20.0
ANISOTROPY_WARN = 0.02
MPP_SOURCES = ("openslide", "vendor:<key>", "tiff_resolution", "manifest", "cli_override")


@dataclass(frozen=True)
class MppCandidate:
    """One µm/px reading found in metadata, before the sanity check."""

    source: str
    x: float
    y: float


@dataclass(frozen=True)
class MppInfo:
    """The µm/px in use for a slide: x (used for geometry), y (recorded) and where it came from."""

    x: float
    y: float
    source: str


def is_sane_mpp(value: float | None) -> bool:
    """True when ``value`` is a finite µm/px inside [0.05, 20]."""
    return value is not None and math.isfinite(value) and MPP_MIN <= value <= MPP_MAX


def _float(value: object) -> float | None:
    try:
        out = float(str(value).strip().strip('"'))
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _pair(props: Mapping[str, object], kx: str, ky: str) -> tuple[float, float] | None:
    x = _float(props.get(kx))
    y = _float(props.get(ky))
    if x is None:
        return None
    return x, y if y is not None else x


def candidates_from_properties(
    props: Mapping[str, object],
    *,
    normalised_prefix: str | None = "openslide",
    extra_keys: Iterable[str] = (),
) -> list[MppCandidate]:
    """All µm/px readings in ``props`` in lookup order; insane values are kept for the message."""
    out: list[MppCandidate] = []
    if normalised_prefix:
        pair = _pair(props, f"{normalised_prefix}.mpp-x", f"{normalised_prefix}.mpp-y")
        if pair:
            source = "openslide" if normalised_prefix == "openslide" else f"vendor:{normalised_prefix}.mpp-x"
            out.append(MppCandidate(source, *pair))
    if (v := _float(props.get("aperio.MPP"))) is not None:
        out.append(MppCandidate("vendor:aperio.MPP", v, v))
    mirax = "mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_"
    if pair := _pair(props, mirax + "X", mirax + "Y"):
        out.append(MppCandidate("vendor:" + mirax + "X", *pair))
    spacing = props.get("philips.DICOM_PIXEL_SPACING")
    if spacing is not None:
        parts = [p for p in (_float(s) for s in str(spacing).replace('"', " ").split()) if p is not None]
        if parts:  # DICOM order is (row spacing = y, column spacing = x), in mm
            y_mm, x_mm = parts[0], parts[-1]
            out.append(MppCandidate("vendor:philips.DICOM_PIXEL_SPACING", x_mm * 1000.0, y_mm * 1000.0))
    res = tiff_resolution_mpp(
        props.get("tiff.XResolution"), props.get("tiff.YResolution"), props.get("tiff.ResolutionUnit")
    )
    if res is not None:
        out.append(MppCandidate("tiff_resolution", *res))
    for key in extra_keys:
        if (v := _float(props.get(key))) is not None:
            out.append(MppCandidate(f"vendor:{key}", v, v))
    return out


def tiff_resolution_mpp(xres: object, yres: object, unit: object) -> tuple[float, float] | None:
    """µm/px from TIFF resolution tags: centimetre → 10,000/value, inch → 25,400/value; None otherwise."""
    x = _float(xres)
    y = _float(yres)
    name = str(unit or "").strip().lower()
    factor = {"centimeter": 1.0e4, "cm": 1.0e4, "3": 1.0e4, "inch": 2.54e4, "2": 2.54e4}.get(name)
    if factor is None or x is None:
        return None
    return factor / x, factor / (y if y is not None else x)


def resolve_mpp(
    path: str | Path,
    candidates: Iterable[MppCandidate],
    *,
    override: float | None = None,
    override_source: str = "cli_override",
) -> MppInfo:
    """Choose the µm/px for a slide, or raise :class:`MissingMppError` with the fix in the message.

    Args:
        path: slide path (for the message).
        candidates: readings in lookup order (:func:`candidates_from_properties` or a backend's own).
        override: explicit µm/px (``--mpp`` or the manifest ``mpp`` column); wins over metadata.
        override_source: ``cli_override`` or ``manifest``.
    """
    name = Path(path).name
    if override is not None:
        if not is_sane_mpp(float(override)):
            raise MissingMppError(
                f"{name}: mpp={override} is outside [{MPP_MIN}, {MPP_MAX}] µm/px; pass the scan's real µm/px "
                "(e.g. --mpp 0.25 for 40x, 0.5 for 20x)"
            )
        return MppInfo(float(override), float(override), override_source)
    rejected: list[str] = []
    for cand in candidates:
        if is_sane_mpp(cand.x) and is_sane_mpp(cand.y):
            if abs(cand.x - cand.y) > ANISOTROPY_WARN * cand.x:
                log.warning(
                    "%s: mpp x=%.6g and y=%.6g differ by more than 2%%; using x", name, cand.x, cand.y
                )
            return MppInfo(cand.x, cand.y, cand.source)
        rejected.append(f"{cand.source}={cand.x:.6g}")
    why = f" (rejected as outside [{MPP_MIN}, {MPP_MAX}]: {', '.join(rejected)})" if rejected else ""
    raise MissingMppError(
        f"{name}: no usable microns-per-pixel in the slide metadata{why}; pass --mpp <µm/px> "
        "or add an 'mpp' column to the slide CSV (slide_id,path,mpp)"
    )
