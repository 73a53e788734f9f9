"""``Slide``: the one reader object the rest of gpfm uses, whatever the backend.

Geometry contract:

* every public coordinate is a **level-0 top-left (x, y)** in pixels; ``read_region(x0, y0, level, (w, h))``
  returns (h, w, 3) uint8 pixels of ``level`` starting at the level pixel ``level_origin(x0, level) =
  floor(x0 / downsample)`` (the same integer snapping on every backend, so neighbouring reads tile exactly);
* transparent / out-of-bounds pixels are white;
* ``mpp`` (x, used for geometry) and ``mpp_y`` are exact metadata values (or the explicit override), never
  binned; ``mpp_source`` records where they came from; per-level mpp = mpp₀ × downsample (non-integer
  downsamples such as 2.0005 are kept as reported);
* a ``Slide`` pickles as its path and options only and (re)opens its backend lazily on first use, also after
  a fork, so it can be handed to DataLoader workers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gpfm.wsi.errors import SlideReadError, UnsupportedSlideError
from gpfm.wsi.mpp import MppInfo, resolve_mpp
from gpfm.wsi.readers.base import SlideBackend

log = logging.getLogger(__name__)

TILE_OK = 0
TILE_PADDED = 1
TILE_FAILED = 2

_SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".bif",
    ".vms",
    ".vmu",
    ".dcm",
    ".svslide",
    ".czi",
)
_IMAGE_ONLY = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_HINTS = {
    ".ndpi": "NDPI files over 4 GB often fail in OpenSlide: convert to pyramidal TIFF "
    "(vips tiffsave in.ndpi out.tif --tile --pyramid --compression jpeg) or try backend='tiffslide'",
    ".mrxs": "MRXS needs its side folder next to it; if it still fails, convert to pyramidal TIFF",
}


def _backend_class(name: str) -> type[SlideBackend]:
    from gpfm.wsi.readers.backends import BACKENDS

    return BACKENDS.get(name)


def level_origin(coord0: float, downsample: float) -> int:
    """floor(coord0 / downsample), robust to float noise: the level pixel where a level-0 coordinate falls."""
    return math.floor(coord0 / downsample + 1e-9)


def auto_backends(path: Path) -> list[str]:
    """Backends to try, in order, for ``backend="auto"``."""
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".dcm":
        return ["openslide", "dicom"]
    if suffix in _IMAGE_ONLY:
        return ["image"]
    if suffix in (".tif", ".tiff"):
        return ["openslide", "tiffslide", "image"]
    return ["openslide", "tiffslide"]


def slide_id_from_path(path: Path) -> str:
    """File name without its slide extension (``a/TCGA-X.svs`` → ``TCGA-X``)."""
    name = path.name
    for suffix in _SLIDE_SUFFIXES + _IMAGE_ONLY:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def identity_file(path: Path) -> Path:
    """The file whose bytes identify a slide: the file itself, or the first ``.dcm`` of a DICOM folder."""
    if path.is_dir():
        files = sorted(path.glob("*.dcm"))
        return files[0] if files else path
    return path


def file_fingerprint(file: Path) -> str:
    """``size:mtime_ns:sha256(first MiB + last MiB)``: a cheap content identity recorded in every output."""
    stat = file.stat()
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        digest.update(fh.read(1 << 20))
        if stat.st_size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            digest.update(fh.read(1 << 20))
    return f"{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()}"


def same_slide_content(recorded: str, path: Path) -> bool:
    """True when ``path`` still holds the slide whose :func:`file_fingerprint` was ``recorded``.

    Size and the head/tail hash decide; the modification time is only a shortcut (equal size and mtime → same,
    without reading), so a copy that loses mtimes is still recognised as the same slide, while a slide
    replaced under the same name (another scan, a re-export) is not. An empty record (files written before
    fingerprints existed) is accepted.
    """
    if not recorded:
        return True
    try:
        size, mtime, digest = recorded.split(":", 2)
        file = identity_file(path)
        stat = file.stat()
        if str(stat.st_size) != size:
            return False
        if str(stat.st_mtime_ns) == mtime:
            return True
        return file_fingerprint(file).split(":", 2)[2] == digest
    except (OSError, ValueError):
        return False


class Slide:
    """A whole-slide image behind any backend. Use :func:`gpfm.wsi.open_slide` to create one.

    Args:
        path: slide file (for a DICOM series: any instance file, or the folder holding it).
        mpp: explicit µm/px (overrides metadata).
        mpp_source: provenance recorded with an explicit mpp: ``cli_override`` (default) or ``manifest``.
        backend: ``auto``, ``openslide``, ``tiffslide``, ``dicom`` or ``image``.
        slide_id: identifier used in outputs (default: file name without extension).
        mpp_keys: extra property keys holding µm/px, tried last.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mpp: float | None = None,
        mpp_source: str | None = None,
        backend: str = "auto",
        slide_id: str | None = None,
        mpp_keys: tuple[str, ...] = (),
    ) -> None:
        self.path = Path(path)
        self.slide_id = slide_id or slide_id_from_path(self.path)
        self._options = {
            "mpp": mpp,
            "mpp_source": mpp_source,
            "backend": backend,
            "slide_id": self.slide_id,
            "mpp_keys": tuple(mpp_keys),
        }
        self._backend: SlideBackend | None = None
        self._backend_name: str | None = None if backend == "auto" else backend
        self._pid: int | None = None
        self._mpp: MppInfo | None = None

    # -- opening ----------------------------------------------------------------------------------------
    def _file(self) -> Path:
        if self.path.is_dir():
            files = sorted(self.path.glob("*.dcm"))
            if not files:
                raise UnsupportedSlideError(
                    f"{self.path}: unsupported because the folder holds no .dcm files"
                )
            return files[0]
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: slide file not found; check the path (or the manifest row)")
        return self.path

    def _open(self) -> SlideBackend:
        from gpfm.wsi.readers.integrity import check_not_truncated, check_readable, diagnose_unopenable

        file = self._file()
        check_readable(file)
        names = [self._backend_name] if self._backend_name else auto_backends(self.path)
        reasons: list[str] = []
        for name in names:
            try:
                handle = _backend_class(name)(file)
            except UnsupportedSlideError as exc:
                reasons.append(f"{name}: {str(exc).split(': ', 1)[-1]}")
            except Exception as exc:  # noqa: BLE001 - a backend refusing a file is an expected outcome
                reasons.append(f"{name}: {type(exc).__name__}: {str(exc).strip() or 'no message'}")
            else:
                self._backend_name = name
                if self._pid is None:  # first open in this process only: a re-open after a fork skips the scan
                    try:
                        check_not_truncated(file)
                    except BaseException:
                        handle.close()
                        raise
                return handle
        specific = diagnose_unopenable(file, "; ".join(reasons))
        if specific is not None:
            raise specific
        hint = _HINTS.get(self.path.suffix.lower())
        raise UnsupportedSlideError(
            f"{self.path.name}: unsupported because "
            + "; ".join(reasons)
            + (f" (hint: {hint})" if hint else "")
        )

    @property
    def handle(self) -> SlideBackend:
        """The open backend; opened on first use and reopened after a fork."""
        if self._backend is None or self._pid != os.getpid():
            self._backend = self._open()
            self._pid = os.getpid()
        return self._backend

    def reopen(self) -> None:
        """Close and reopen the backend (first step of the corrupt-tile recovery)."""
        self.close()
        _ = self.handle

    def close(self) -> None:
        """Release the backend handle (the slide reopens on next use)."""
        if self._backend is not None and self._pid == os.getpid():
            try:
                self._backend.close()
            except Exception:  # noqa: BLE001 - closing a broken handle must not mask the real error
                pass
        self._backend = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "options": {**self._options, "backend": self._backend_name or "auto"}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], **state["options"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, backend={self._backend_name or 'auto'!r})"

    # -- metadata -----------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """Name of the backend in use (opens the slide when still ``auto``)."""
        _ = self.handle
        return str(self._backend_name)

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.handle.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level."""
        return self.handle.level_dimensions

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.handle.level_dimensions[0]

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of every level relative to level 0, as the reader reports it (may be non-integer)."""
        return self.handle.level_downsamples

    @property
    def properties(self) -> dict[str, object]:
        """Raw metadata of the backend."""
        return dict(self.handle.properties)

    @property
    def bounds(self) -> tuple[int, int, int, int] | None:
        """Non-empty region (x, y, w, h) in level-0 px, when the format defines one."""
        return self.handle.bounds

    @property
    def reader_version(self) -> str:
        """Reader library and version, recorded in outputs."""
        return self.handle.version

    def _mpp_info(self) -> MppInfo:
        if self._mpp is None:
            override = self._options["mpp"]
            self._mpp = resolve_mpp(
                self.path,
                [] if override is not None else self.handle.mpp_candidates(self._options["mpp_keys"]),
                override=override,
                override_source=self._options["mpp_source"] or "cli_override",
            )
        return self._mpp

    @property
    def mpp(self) -> float:
        """µm/px of level 0 along x (used for all geometry); raises MissingMppError when unknown."""
        return self._mpp_info().x

    @property
    def mpp_y(self) -> float:
        """µm/px of level 0 along y (recorded; geometry uses x)."""
        return self._mpp_info().y

    @property
    def mpp_source(self) -> str:
        """Where the mpp came from: openslide, vendor:<key>, tiff_resolution, manifest, cli_override."""
        return self._mpp_info().source

    def mpp_at_level(self, level: int) -> float:
        """µm/px of ``level`` = mpp₀ × downsample."""
        return self.mpp * self.level_downsamples[level]

    def best_level_for_mpp(self, target_mpp: float, tol: float = 0.05) -> int:
        """Coarsest level whose mpp ≤ ``target_mpp · (1 + tol)``; level 0 when none qualifies."""
        best = 0
        for level in range(self.level_count):
            if self.mpp_at_level(level) <= target_mpp * (1.0 + tol):
                best = level
        return best

    def fingerprint(self) -> str:
        """``size:mtime_ns:sha256(first MiB + last MiB)`` of the file: cheap identity for provenance."""
        return file_fingerprint(self._file())

    # -- pixels -------------------------------------------------------------------------------------------
    def level_origin(self, coord0: float, level: int) -> int:
        """Level pixel where a read at level-0 coordinate ``coord0`` starts: floor(coord0 / downsample)."""
        return level_origin(coord0, self.level_downsamples[level])

    def read_level_region(self, level: int, lx: int, ly: int, size: tuple[int, int]) -> np.ndarray:
        """Pixels of ``level`` from level pixel (lx, ly), size (w, h) → (h, w, 3) uint8, white outside."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"{self.path.name}: level {level} out of range 0..{self.level_count - 1}")
        width, height = int(size[0]), int(size[1])
        pixels = self.handle.read_level(level, int(lx), int(ly), width, height)
        if pixels.shape != (height, width, 3) or pixels.dtype != np.uint8:
            raise SlideReadError(
                f"{self.path.name}: backend returned {pixels.shape} {pixels.dtype} for {size}"
            )
        return pixels

    def read_region(self, x0: float, y0: float, level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` = (w, h) pixels of ``level`` whose top-left is level-0 (x0, y0) → (h, w, 3) uint8."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"{self.path.name}: level {level} out of range 0..{self.level_count - 1}")
        return self.read_level_region(level, self.level_origin(x0, level), self.level_origin(y0, level), size)

    def read_region_safe(
        self, x0: float, y0: float, level: int, size: tuple[int, int]
    ) -> tuple[np.ndarray, int]:
        """``read_region`` with the recovery of returns (pixels, status).

        1. retry once at the same level after reopening the handle;
        2. read the same footprint from each finer level and downsample (area filter);
        3. give up: white pixels and ``TILE_FAILED`` (logged; the caller counts and records it).
        """
        try:
            return self.read_region(x0, y0, level, size), TILE_OK
        except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
            log.warning(
                "%s: read at (%s, %s) level %d failed (%s); reopening", self.path.name, x0, y0, level, exc
            )
        try:
            self.reopen()
            return self.read_region(x0, y0, level, size), TILE_OK
        except Exception:  # noqa: BLE001
            pass
        width, height = int(size[0]), int(size[1])
        ds = self.level_downsamples[level]
        lx, ly = self.level_origin(x0, level), self.level_origin(y0, level)
        for finer in range(level - 1, -1, -1):
            ratio = ds / self.level_downsamples[finer]
            try:
                region = self.read_level_region(
                    finer,
                    math.floor(lx * ratio),
                    math.floor(ly * ratio),
                    (math.ceil(width * ratio), math.ceil(height * ratio)),
                )
                log.warning("%s: recovered (%s, %s) from level %d", self.path.name, x0, y0, finer)
                return cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA), TILE_OK
            except Exception:  # noqa: BLE001
                continue
        log.error(
            "%s: tile at (%s, %s) level %d unreadable; filled white, status failed",
            self.path.name,
            x0,
            y0,
            level,
        )
        return np.full((height, width, 3), 255, dtype=np.uint8), TILE_FAILED

    def read_scaled(self, scale: float, chunk_px: int = 2048) -> np.ndarray:
        """The whole slide at ``scale`` level-0 px per output px, never loading a full-resolution plane.

        Built from the coarsest level with downsample ≤ ``scale`` by strided region reads of at most
        ``chunk_px``² level pixels, each area-resampled. Output pixel (r, c) covers level-0
        ``[c·scale, (c+1)·scale) × [r·scale, (r+1)·scale)``; shape (ceil(H₀/scale), ceil(W₀/scale), 3).
        """
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        w0, h0 = self.dimensions
        out_w, out_h = max(1, math.ceil(w0 / scale - 1e-9)), max(1, math.ceil(h0 / scale - 1e-9))
        level = max(
            i for i in range(self.level_count) if self.level_downsamples[i] <= scale * (1 + 1e-6) or i == 0
        )
        factor = scale / self.level_downsamples[level]  # level px per output px (≥ 1)
        step = max(1, int(chunk_px // factor))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        for oy in range(0, out_h, step):
            oy1 = min(out_h, oy + step)
            ly0, ly1 = round(oy * factor), max(round(oy1 * factor), round(oy * factor) + 1)
            for ox in range(0, out_w, step):
                ox1 = min(out_w, ox + step)
                lx0, lx1 = round(ox * factor), max(round(ox1 * factor), round(ox * factor) + 1)
                region = self.read_level_region(level, lx0, ly0, (lx1 - lx0, ly1 - ly0))
                if region.shape[:2] != (oy1 - oy, ox1 - ox):
                    region = cv2.resize(region, (ox1 - ox, oy1 - oy), interpolation=cv2.INTER_AREA)
                out[oy:oy1, ox:ox1] = region
        return out

    def thumbnail(self, max_side: int = 1024) -> np.ndarray:
        """RGB uint8 thumbnail whose longest side is ``max_side`` (never upsampled)."""
        scale = max(1.0, max(self.dimensions) / float(max_side))
        return self.read_scaled(scale)
