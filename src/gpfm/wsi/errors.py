"""Errors raised by :mod:`gpfm.wsi`; every message is one line naming the file and the fix."""

from __future__ import annotations

from gpfm.errors import GpfmError


class WsiError(GpfmError):
    """Base class of every slide-side error (catch this to isolate one slide in a batch)."""


class MissingMppError(WsiError, ValueError):
    """The slide has no usable µm/px in its metadata and none was given.

    Raised instead of silently falling back to level 0 or a magnification bin.
    """


class UnsupportedSlideError(WsiError):
    """No backend can read this file; the message says which backends were tried and why they refused."""


class TruncatedSlideError(WsiError):
    """The file starts like a slide format we read but ends before its own structure does (incomplete copy)."""


class UnreadableSlideError(WsiError):
    """The file's bytes cannot be read at all (permission, I/O error) or the file is empty."""


class SlideReadError(WsiError):
    """A region could not be read even after reopening the file and reading finer levels."""


class TilingError(WsiError, ValueError):
    """The tiling request cannot be met on this slide (e.g. target finer than the scan without upsampling)."""
