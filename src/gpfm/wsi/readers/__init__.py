"""Slide readers: one backend per file behind :class:`~gpfm.wsi.readers.base.SlideBackend`.

``open_slide(path, mpp=None, backend="auto")`` returns a :class:`~gpfm.wsi.readers.slide.Slide`. Backends are
registered by name in :data:`BACKENDS` (``openslide`` default, ``tiffslide``, ``dicom``, ``image``); ``auto``
tries them in the order of :func:`~gpfm.wsi.readers.slide.auto_backends` and, when all refuse, raises
:class:`~gpfm.wsi.errors.UnsupportedSlideError` naming each backend's reason.
"""

from __future__ import annotations

import os

from gpfm.wsi.readers.backends import BACKENDS
from gpfm.wsi.readers.base import SlideBackend, composite_on_white
from gpfm.wsi.readers.slide import TILE_FAILED, TILE_OK, TILE_PADDED, Slide, auto_backends, slide_id_from_path


def open_slide(
    path: str | os.PathLike[str],
    mpp: float | None = None,
    backend: str = "auto",
    *,
    mpp_source: str | None = None,
    slide_id: str | None = None,
    mpp_keys: tuple[str, ...] = (),
    require_mpp: bool = True,
) -> Slide:
    """Open a slide and check it now (unsupported file, missing mpp), so errors surface before any work.

    Args:
        path: slide file, or a folder holding a DICOM-WSI series.
        mpp: explicit µm/px of level 0; required for plain images and slides without mpp metadata.
        backend: ``auto`` | ``openslide`` | ``tiffslide`` | ``dicom`` | ``image``.
        mpp_source: provenance of an explicit ``mpp``: ``cli_override`` (default) or ``manifest``.
        slide_id: name used in outputs (default: the file name without extension).
        mpp_keys: extra metadata keys holding µm/px.
        require_mpp: resolve the mpp now (raise :class:`MissingMppError` here); False defers it to first use.

    Raises:
        UnsupportedSlideError: no backend can read the file (the message says why for each).
        MissingMppError: no usable mpp and none given (the message names ``--mpp`` / the CSV column).
    """
    if backend != "auto" and backend not in BACKENDS:
        BACKENDS.get(backend)  # raises with the known names
    slide = Slide(path, mpp=mpp, mpp_source=mpp_source, backend=backend, slide_id=slide_id, mpp_keys=mpp_keys)
    try:
        _ = slide.handle
        if require_mpp:
            _ = slide.mpp
    except BaseException:
        slide.close()
        raise
    return slide


__all__ = [
    "BACKENDS",
    "TILE_FAILED",
    "TILE_OK",
    "TILE_PADDED",
    "Slide",
    "SlideBackend",
    "auto_backends",
    "composite_on_white",
    "open_slide",
    "slide_id_from_path",
]
