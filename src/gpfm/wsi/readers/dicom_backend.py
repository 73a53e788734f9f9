"""DICOM-WSI backend (VL Whole Slide Microscopy Image, SOP 1.2.840.10008.5.1.4.1.1.77.1.6) via pydicom.

Reads single-instance files and multi-file series: the other instances of the same ``SeriesInstanceUID`` in
the same folder whose ``ImageType`` is VOLUME (or absent) become pyramid levels, sorted by size; THUMBNAIL,
LABEL and OVERVIEW instances are ignored. Frames are located once (basic offset table, else one fragment per
frame, else JPEG start-of-image markers) and decoded on demand (JPEG baseline/extended/lossless, JPEG 2000,
JPEG-LS via imagecodecs; native 8-bit little endian); recently used frames are cached. TILED_FULL (also
assumed when ``DimensionOrganizationType`` is missing) and TILED_SPARSE layouts are supported; only the
first focal plane and optical path are read. µm/px comes from ``PixelSpacing`` (mm) in the shared
functional groups, else from ``ImagedVolumeWidth``/``Height`` (mm) over the total pixel matrix.

Anything this reader cannot handle raises :class:`~gpfm.wsi.errors.UnsupportedSlideError` saying why.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpfm.wsi.errors import UnsupportedSlideError
from gpfm.wsi.mpp import MppCandidate
from gpfm.wsi.readers.base import SlideBackend, composite_on_white, paste_clipped

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_JPEG_TS = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
}
_J2K_TS = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}
_JLS_TS = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_NATIVE_TS = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_FRAME_CACHE = 64


def _read_header(path: Path):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # over-long UIDs etc. are common and harmless here
        return pydicom.dcmread(str(path), defer_size=1024, force=True)


@dataclass
class _Instance:
    path: Path
    width: int
    height: int
    frame_w: int
    frame_h: int
    n_frames: int
    transfer_syntax: str
    samples: int
    positions: dict[tuple[int, int], int]  # (tile row, tile col) → frame index
    pixel_offset: int  # file offset of the pixel data value
    photometric: str


def _frame_positions(
    ds, width: int, height: int, fw: int, fh: int, n_frames: int
) -> dict[tuple[int, int], int]:
    cols, rows = math.ceil(width / fw), math.ceil(height / fh)
    org = str(ds.get("DimensionOrganizationType", "TILED_FULL") or "TILED_FULL").upper()
    if org == "TILED_FULL":
        if n_frames < rows * cols:
            raise UnsupportedSlideError(
                f"{ds.filename}: unsupported because TILED_FULL needs {rows * cols} frames but has {n_frames}"
            )
        return {(r, c): r * cols + c for r in range(rows) for c in range(cols)}
    if org == "TILED_SPARSE" and "PerFrameFunctionalGroupsSequence" in ds:
        out: dict[tuple[int, int], int] = {}
        for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            pos = item.PlanePositionSlideSequence[0]
            col = int(pos.ColumnPositionInTotalImagePixelMatrix) - 1
            row = int(pos.RowPositionInTotalImagePixelMatrix) - 1
            if col % fw or row % fh:
                raise UnsupportedSlideError(
                    f"{ds.filename}: unsupported because sparse frame {i} is off-grid"
                )
            out.setdefault((row // fh, col // fw), i)
        return out
    raise UnsupportedSlideError(f"{ds.filename}: unsupported because DimensionOrganizationType is {org!r}")


def _instance(path: Path, ds) -> _Instance:
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts not in _JPEG_TS | _J2K_TS | _JLS_TS | _NATIVE_TS:
        raise UnsupportedSlideError(
            f"{path.name}: unsupported because transfer syntax {ts} has no decoder here"
        )
    if int(ds.get("BitsAllocated", 8)) != 8:
        raise UnsupportedSlideError(
            f"{path.name}: unsupported because BitsAllocated is {ds.BitsAllocated}, not 8"
        )
    try:
        width, height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
        fw, fh = int(ds.Columns), int(ds.Rows)
    except AttributeError as exc:
        raise UnsupportedSlideError(f"{path.name}: unsupported because {exc}") from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    element = ds.get_item(0x7FE00010)
    if element is None:
        raise UnsupportedSlideError(f"{path.name}: unsupported because it has no pixel data")
    offset = getattr(element, "value_tell", None) or getattr(element, "file_tell", None)
    if offset is None:
        raise UnsupportedSlideError(f"{path.name}: unsupported because the pixel data offset is unknown")
    return _Instance(
        path=path,
        width=width,
        height=height,
        frame_w=fw,
        frame_h=fh,
        n_frames=n_frames,
        transfer_syntax=ts,
        samples=int(ds.get("SamplesPerPixel", 3)),
        positions=_frame_positions(ds, width, height, fw, fh, n_frames),
        pixel_offset=int(offset),
        photometric=str(ds.get("PhotometricInterpretation", "RGB")),
    )


class DicomBackend(SlideBackend):
    """A DICOM-WSI series (one or more instance files) read with pydicom and per-frame decoding."""

    name = "dicom"

    def __init__(self, path: Path, **options: object) -> None:
        super().__init__(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom validates lazily: over-long UIDs warn on first access
            self._load_series(path)

    def _load_series(self, path: Path) -> None:
        ds = _read_header(path)
        if str(ds.get("SOPClassUID", "")) != WSI_SOP_CLASS:
            raise UnsupportedSlideError(
                f"{path.name}: unsupported because SOPClassUID {ds.get('SOPClassUID', 'missing')} is not a "
                "VL Whole Slide Microscopy Image"
            )
        series = str(ds.get("SeriesInstanceUID", ""))
        headers = [(path, ds)]
        for other in sorted(path.parent.glob("*.dcm")):
            if other.resolve() == path.resolve():
                continue
            try:
                ods = _read_header(other)
            except Exception:  # noqa: BLE001 - unrelated or broken neighbours are not our slide
                continue
            if (
                str(ods.get("SeriesInstanceUID", "")) == series
                and str(ods.get("SOPClassUID", "")) == WSI_SOP_CLASS
            ):
                headers.append((other, ods))
        volumes = [(p, d) for p, d in headers if self._is_volume(d)]
        if not volumes:
            raise UnsupportedSlideError(f"{path.name}: unsupported because its series has no VOLUME instance")
        levels = sorted((_instance(p, d) for p, d in volumes), key=lambda i: -i.width * i.height)
        unique: list[_Instance] = []
        for inst in levels:  # one instance per size (duplicates are other focal planes / concatenations)
            if not unique or (inst.width, inst.height) != (unique[-1].width, unique[-1].height):
                unique.append(inst)
        self._levels = unique
        self._frame_index: dict[int, list[list[tuple[int, int]]]] = {}
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # reader threads share the frame cache and the offset tables
        w0, h0 = unique[0].width, unique[0].height
        self.level_dimensions = tuple((i.width, i.height) for i in unique)
        self.level_downsamples = tuple((w0 / i.width + h0 / i.height) / 2.0 for i in unique)
        self.properties = {
            "dicom.SeriesInstanceUID": series,
            "dicom.TransferSyntaxUID": unique[0].transfer_syntax,
            "dicom.Manufacturer": str(ds.get("Manufacturer", "")),
        }
        base_header = next(d for p, d in volumes if p == unique[0].path)
        self._mpp = self._spacing(base_header, w0, h0)

    @staticmethod
    def _is_volume(ds) -> bool:
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        return len(image_type) < 3 or image_type[2] == "VOLUME"

    @staticmethod
    def _spacing(ds, width: int, height: int) -> list[MppCandidate]:
        out: list[MppCandidate] = []
        try:
            spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
            out.append(
                MppCandidate("vendor:dicom.PixelSpacing", float(spacing[1]) * 1e3, float(spacing[0]) * 1e3)
            )
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            pass
        vw, vh = ds.get("ImagedVolumeWidth"), ds.get("ImagedVolumeHeight")
        if vw and vh:
            mx, my = float(vw) * 1e3 / width, float(vh) * 1e3 / height
            # A physical size whose aspect disagrees with the pixel matrix is a placeholder, not a measurement
            # (pydicom-written test files often carry 15 x 15 mm for any image): treat it as missing.
            if abs(mx - my) <= 0.02 * mx:
                out.append(MppCandidate("vendor:dicom.ImagedVolumeWidth", mx, my))
        return out

    def mpp_candidates(self, extra_keys: tuple[str, ...] = ()) -> list[MppCandidate]:
        """µm/px readings in lookup order."""
        return list(self._mpp)

    # -- frame access -------------------------------------------------------------------------------------
    def _fragments(self, level: int) -> list[list[tuple[int, int]]]:
        """Per frame, the (file offset, length) of its fragments."""
        if level in self._frame_index:
            return self._frame_index[level]
        from pydicom.encaps import parse_basic_offsets, parse_fragments

        inst = self._levels[level]
        with open(inst.path, "rb") as fh:
            fh.seek(inst.pixel_offset)
            basic = parse_basic_offsets(fh)
            first_fragment = fh.tell()
            _, positions = parse_fragments(fh)
            frags: list[tuple[int, int]] = []
            for pos in positions:
                fh.seek(pos + 4)
                length = int.from_bytes(fh.read(4), "little")
                frags.append((pos + 8, length))
            if basic:
                starts = [first_fragment + b for b in basic]
                frames: list[list[tuple[int, int]]] = [[] for _ in starts]
                for pos, frag in zip(positions, frags, strict=True):
                    frames[int(np.searchsorted(starts, pos, side="right")) - 1].append(frag)
            elif len(frags) == inst.n_frames:
                frames = [[f] for f in frags]
            elif inst.transfer_syntax in _JPEG_TS:
                frames = []
                for off, length in frags:
                    fh.seek(off)
                    if fh.read(2) == b"\xff\xd8" or not frames:
                        frames.append([])
                    frames[-1].append((off, length))
            else:
                raise UnsupportedSlideError(
                    f"{inst.path.name}: unsupported because {len(frags)} fragments cannot be split into "
                    f"{inst.n_frames} frames without an offset table"
                )
        self._frame_index[level] = frames
        return frames

    def _decode(self, level: int, frame: int) -> np.ndarray:
        key = (level, frame)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            fragments = (
                self._fragments(level) if self._levels[level].transfer_syntax not in _NATIVE_TS else []
            )
        inst = self._levels[level]
        if inst.transfer_syntax in _NATIVE_TS:
            size = inst.frame_w * inst.frame_h * inst.samples
            with open(inst.path, "rb") as fh:
                fh.seek(inst.pixel_offset + frame * size)
                buf = fh.read(size)
            pixels = np.frombuffer(buf, np.uint8).reshape(inst.frame_h, inst.frame_w, inst.samples)
        else:
            import imagecodecs

            parts = []
            with open(inst.path, "rb") as fh:
                for off, length in fragments[frame]:
                    fh.seek(off)
                    parts.append(fh.read(length))
            data = b"".join(parts)
            if inst.transfer_syntax in _JPEG_TS:
                pixels = imagecodecs.jpeg_decode(data)
            elif inst.transfer_syntax in _J2K_TS:
                pixels = imagecodecs.jpeg2k_decode(data)
            else:
                pixels = imagecodecs.jpegls_decode(data)
            pixels = np.asarray(pixels)
            if (
                pixels.ndim == 3
                and pixels.shape[2] == 3
                and inst.photometric.startswith("YBR")
                and (inst.transfer_syntax in _JLS_TS)
            ):  # JPEG-LS keeps YCbCr as stored; convert like the JPEG decoders do
                import cv2

                pixels = cv2.cvtColor(pixels, cv2.COLOR_YCrCb2RGB)
        pixels = composite_on_white(pixels)
        with self._lock:
            self._cache[key] = pixels
            if len(self._cache) > _FRAME_CACHE:
                self._cache.popitem(last=False)
        return pixels

    def _fetch(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        inst = self._levels[level]
        fw, fh = inst.frame_w, inst.frame_h
        out = np.full((y1 - y0, x1 - x0, 3), 255, dtype=np.uint8)
        for row in range(y0 // fh, (y1 - 1) // fh + 1):
            for col in range(x0 // fw, (x1 - 1) // fw + 1):
                frame = inst.positions.get((row, col))
                if frame is None:
                    continue  # sparse: no frame here, stays white
                tile = self._decode(level, frame)
                tx0, ty0 = col * fw, row * fh
                ax0, ay0 = max(x0, tx0), max(y0, ty0)
                ax1, ay1 = min(x1, tx0 + tile.shape[1]), min(y1, ty0 + tile.shape[0])
                if ax1 > ax0 and ay1 > ay0:
                    out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = tile[
                        ay0 - ty0 : ay1 - ty0, ax0 - tx0 : ax1 - tx0
                    ]
        return out

    def read_level(self, level: int, lx: int, ly: int, width: int, height: int) -> np.ndarray:
        """Integer level-space read; white outside the level."""
        return paste_clipped(
            self.level_dimensions[level],
            lx,
            ly,
            width,
            height,
            lambda x0, y0, x1, y1: self._fetch(level, x0, y0, x1, y1),
        )

    @property
    def version(self) -> str:
        """Reader library and version."""
        import imagecodecs
        import pydicom

        return f"pydicom {pydicom.__version__} + imagecodecs {imagecodecs.__version__}"

    def close(self) -> None:
        """Release the file handle."""
        self._cache.clear()
