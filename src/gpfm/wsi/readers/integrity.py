"""Why a slide file cannot be read: unreadable, truncated, or of an unsupported format — three distinct errors.

* **unreadable** (:class:`UnreadableSlideError`): the bytes cannot be read at all (no permission, I/O error,
  a folder where a file was expected) or the file is empty;
* **truncated** (:class:`TruncatedSlideError`): the file starts like a format we read (TIFF/BigTIFF, DICOM,
  JPEG, PNG) but ends before its own structure does — e.g. an interrupted copy or download. For TIFF-based
  slides (SVS, generic/OME TIFF, NDPI, SCN, BIF) the tile tables of every page are checked against the file
  size when the slide is opened, so a slide whose *pixels* were cut off is caught before any tile is read;
* **unsupported** (:class:`~gpfm.wsi.errors.UnsupportedSlideError`): a readable, whole file in a format no
  backend opens (e.g. a PDF renamed ``.svs``).
"""

from __future__ import annotations

import os
from pathlib import Path

from gpfm.wsi.errors import TruncatedSlideError, UnreadableSlideError

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_MAGICS = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG"}


def sniff_format(file: Path) -> str | None:
    """The container format from the first bytes: ``TIFF``, ``DICOM``, ``JPEG``, ``PNG``, or None."""
    with open(file, "rb") as fh:
        head = fh.read(132)
    if head[:4] in _TIFF_MAGICS:
        return "TIFF"
    if head[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _MAGICS.items():
        if head.startswith(magic):
            return name
    return None


def check_readable(file: Path) -> None:
    """Raise :class:`UnreadableSlideError` when ``file`` cannot be read or is empty."""
    try:
        size = file.stat().st_size
        if not os.access(file, os.R_OK):
            raise UnreadableSlideError(f"{file}: no permission to read the file; fix its permissions (chmod a+r)")
        with open(file, "rb") as fh:
            fh.read(1)
    except UnreadableSlideError:
        raise
    except IsADirectoryError:
        raise UnreadableSlideError(f"{file}: is a folder, not a slide file; pass the slide file itself") from None
    except PermissionError:
        raise UnreadableSlideError(f"{file}: no permission to read the file; fix its permissions") from None
    except OSError as exc:
        raise UnreadableSlideError(f"{file}: cannot read the file ({exc.strerror or exc}); check the disk or "
                                   "network share") from None
    if size == 0:
        raise UnreadableSlideError(f"{file}: the file is empty (0 bytes); copy or download it again")


def _ifd_chain_problem(file: Path, size: int) -> str | None:
    """Walk the chain of TIFF directories (classic and BigTIFF); a reason when it points past the end."""
    import struct

    with open(file, "rb") as fh:
        head = fh.read(16)
        order = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\x00", b"\x00+")
        offset = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
        count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
        count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
        seen: set[int] = set()
        while offset:
            if offset in seen or len(seen) > 10_000:
                return "its directory chain loops"
            seen.add(offset)
            if offset + count_size > size:
                return f"the file has {size:,} bytes but a directory starts at byte {offset:,}"
            fh.seek(offset)
            n = struct.unpack(order + count_fmt, fh.read(count_size))[0]
            end = offset + count_size + n * entry_size + next_size
            if end > size:
                return f"the file has {size:,} bytes but a directory ends at byte {end:,}"
            fh.seek(offset + count_size + n * entry_size)
            offset = struct.unpack(order + next_fmt, fh.read(next_size))[0]
    return None


def tiff_truncation(file: Path) -> str | None:
    """For a TIFF-based file: a one-line reason when its directories or tile tables reach past the end."""
    import logging

    import tifffile

    size = file.stat().st_size
    problem = _ifd_chain_problem(file, size)
    if problem is not None:
        return problem
    quiet = logging.getLogger("tifffile")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # tifffile logs (rather than raises) some damage; we report it ourselves
    try:
        with tifffile.TiffFile(file) as tif:
            furthest = 0
            for page in tif.pages:
                offsets, counts = page.dataoffsets, page.databytecounts
                if offsets:
                    furthest = max(furthest, max(o + c for o, c in zip(offsets, counts, strict=False)))
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types on damaged structure
        return f"its TIFF structure cannot be parsed ({type(exc).__name__}: {str(exc).strip()[:120]})"
    finally:
        quiet.setLevel(level)
    if furthest > size:
        return f"the file has {size:,} bytes but its image data extend to byte {furthest:,}"
    return None


def check_not_truncated(file: Path) -> None:
    """Raise :class:`TruncatedSlideError` when a TIFF-based slide ends before its image data do."""
    if sniff_format(file) != "TIFF":
        return
    reason = tiff_truncation(file)
    if reason is not None:
        raise TruncatedSlideError(
            f"{file.name}: truncated: {reason}; the copy or download is incomplete — copy it again"
        )


def diagnose_unopenable(file: Path, reasons: str) -> Exception | None:
    """The specific error for a file no backend opened (unreadable, truncated), or None for "unsupported"."""
    check_readable(file)
    fmt = sniff_format(file)
    if fmt == "TIFF":
        reason = tiff_truncation(file)
        if reason is not None:
            return TruncatedSlideError(f"{file.name}: truncated or damaged: {reason}; copy the file again "
                                       f"(readers said: {reasons})")
    elif fmt is not None:
        lowered = reasons.lower()
        if any(k in lowered for k in ("truncat", "premature end", "unexpected end", "eof", "end of file")):
            return TruncatedSlideError(f"{file.name}: truncated {fmt} file; copy it again (readers said: {reasons})")
    return None
