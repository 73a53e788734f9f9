"""The slide list: explicit paths, folders (sorted scan) or a CSV manifest ``slide_id,path[,mpp]``.

Every run starts from the same ordered list, so every shard of a job sees the same slides under the same ids.
A slide id names all of a slide's outputs; two slides with one id would overwrite each other, so duplicates are
an error, never a silent "last one wins".
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpfm.errors import GpfmError

log = logging.getLogger(__name__)

#: File endings scanned in folders (lower case; compound endings such as ``.ome.tiff`` end in one of these), with
#: the reader that opens them. OpenSlide 4 (bundled by openslide-bin): Aperio .svs/.tif, Hamamatsu .ndpi/.vms/
#: .vmu, Leica .scn, MIRAX .mrxs, Philips .tiff, Sakura .svslide, Ventana .bif, Zeiss .czi, DICOM .dcm and generic
#: tiled TIFF; tiffslide: SVS, NDPI and generic/OME TIFF; pydicom: DICOM-WSI; Pillow: plain images (with --mpp).
#: A folder holding ``.dcm`` files is one DICOM-WSI series (one slide, named after the folder).
SLIDE_FORMATS: dict[str, str] = {
    ".svs": "Aperio (OpenSlide, tiffslide)", ".tif": "TIFF: Aperio, Ventana, Trestle, generic/OME (OpenSlide, "
    "tiffslide)", ".tiff": "TIFF: Philips, generic/OME (OpenSlide, tiffslide)", ".ndpi": "Hamamatsu (OpenSlide, "
    "tiffslide)", ".vms": "Hamamatsu VMS (OpenSlide)", ".vmu": "Hamamatsu VMU (OpenSlide)", ".mrxs": "MIRAX "
    "(OpenSlide; needs its side folder)", ".scn": "Leica (OpenSlide)", ".bif": "Ventana (OpenSlide)",
    ".svslide": "Sakura (OpenSlide)", ".czi": "Zeiss (OpenSlide 4)", ".dcm": "DICOM-WSI (OpenSlide, pydicom)",
    ".png": "plain image (needs --mpp)", ".jpg": "plain image (needs --mpp)", ".jpeg": "plain image (needs --mpp)",
}
SLIDE_EXTENSIONS: tuple[str, ...] = tuple(SLIDE_FORMATS)
#: Files that belong to a slide without being one (MIRAX side files, sidecars): never reported as skipped.
_COMPANION_SUFFIXES = (".dat", ".ini", ".xml", ".json", ".csv", ".txt", ".md", ".geojson", ".h5", ".lock")

#: Columns a manifest must (``slide_id``, ``path``) or may (``mpp``) have.
MANIFEST_REQUIRED = ("slide_id", "path")


class SlideListError(GpfmError, ValueError):
    """The slide list is unusable (missing file, bad manifest, duplicate slide ids); the message names the fix."""


#: Longest slide id accepted (file systems allow 255 bytes per name; outputs add suffixes such as ``_patches.h5``).
MAX_SLIDE_ID_BYTES = 200


def slide_id_problem(slide_id: str) -> str | None:
    """Why ``slide_id`` cannot name output files inside a job folder, or None when it is safe.

    A slide id becomes a file name (``state/<id>.json``, ``features_<enc>/<id>.h5``), so it must be one plain
    name: not empty, no path separator, not ``.``/``..``, no leading dot (hidden, or ``..x`` tricks), no
    control characters, and at most :data:`MAX_SLIDE_ID_BYTES` UTF-8 bytes.
    """
    if not slide_id or not slide_id.strip():
        return "it is empty"
    if slide_id != slide_id.strip():
        return "it has leading or trailing spaces"
    if "/" in slide_id or "\\" in slide_id:
        return "it contains a path separator (/ or \\), which would write outside the job folder"
    if slide_id in (".", ".."):
        return "it is a relative folder name"
    if slide_id.startswith("."):
        return "it starts with a dot (hidden file, or a relative path)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in slide_id):
        return "it contains a control character (e.g. a newline or NUL)"
    if len(slide_id.encode("utf-8")) > MAX_SLIDE_ID_BYTES:
        return f"it is longer than {MAX_SLIDE_ID_BYTES} bytes"
    return None


def check_slide_id(slide_id: str, where: str) -> str:
    """Return ``slide_id`` when it is a safe file name, else raise :class:`SlideListError` naming ``where``."""
    problem = slide_id_problem(slide_id)
    if problem is not None:
        raise SlideListError(
            f"{where}: slide id {slide_id!r} cannot name output files because {problem}; give a plain name "
            "(letters, digits, - _ .) in the slide_id column of a CSV manifest (slide_id,path[,mpp])"
        )
    return slide_id


@dataclass(frozen=True)
class SlideEntry:
    """One slide to process.

    Attributes:
        slide_id: unique name used for every output file of this slide (the file stem unless a manifest names it).
        path: the slide file.
        mpp: µm/px at level 0 that overrides the file's metadata, or None to read it from the file.
        mpp_source: where ``mpp`` came from: ``manifest`` or ``cli_override`` (None when ``mpp`` is None).
    """

    slide_id: str
    path: Path
    mpp: float | None = None
    mpp_source: str | None = None


def slide_id_for(path: Path) -> str:
    """The default slide id: the file name without its (possibly compound) extension."""
    if path.is_dir():
        return path.name  # a DICOM-WSI series folder
    name = path.name
    for compound in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(compound):
            return name[: -len(compound)]
    return path.stem


def _parse_mpp(value: str | float | None, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        mpp = float(value)
    except ValueError:
        raise SlideListError(f"{where}: mpp {value!r} is not a number; write µm/px at level 0, e.g. 0.25") from None
    if not math.isfinite(mpp) or not 0.05 <= mpp <= 20.0:
        raise SlideListError(f"{where}: mpp {mpp} is outside the plausible range [0.05, 20] µm/px; check the value")
    return mpp


def read_manifest(path: Path) -> list[SlideEntry]:
    """Read a CSV manifest with columns ``slide_id,path[,mpp]``; relative paths are relative to the CSV's folder.

    Raises:
        SlideListError: missing columns, an empty id, a bad mpp, or a slide file that does not exist.
    """
    try:
        return _read_manifest(path)
    except UnicodeDecodeError:
        raise SlideListError(f"{path}: manifest is not UTF-8 text; save it as a UTF-8 CSV") from None
    except csv.Error as exc:
        raise SlideListError(f"{path}: malformed CSV ({exc}); check quoting and delimiters") from None


def _read_manifest(path: Path) -> list[SlideEntry]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in MANIFEST_REQUIRED if c not in columns]
        if missing:
            raise SlideListError(
                f"{path}: manifest lacks column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}); "
                "the header must be slide_id,path[,mpp]"
            )
        entries = []
        seen: dict[str, int] = {}
        for line_no, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            where = f"{path}:{line_no}"
            if not row.get("slide_id"):
                raise SlideListError(f"{where}: empty slide_id; every row needs a unique slide id")
            check_slide_id(row["slide_id"], where)
            if row["slide_id"] in seen:
                raise SlideListError(f"{where}: slide id {row['slide_id']!r} repeats line {seen[row['slide_id']]}; "
                                     "slide ids name the output files — give every row a unique slide_id")
            seen[row["slide_id"]] = line_no
            if not row.get("path"):
                raise SlideListError(f"{where}: empty path; every row needs the slide file's path")
            slide_path = Path(row["path"]).expanduser()
            if not slide_path.is_absolute():
                slide_path = path.parent / slide_path
            if not slide_path.exists():
                raise SlideListError(f"{where}: slide file {slide_path} does not exist; fix the path column")
            if slide_path.is_dir() and not any(slide_path.glob("*.dcm")):
                raise SlideListError(f"{where}: {slide_path} is a folder without .dcm files; a folder is read "
                                     "only as a DICOM-WSI series — point the path column at the slide file")
            mpp = _parse_mpp(row.get("mpp"), where)
            entries.append(SlideEntry(row["slide_id"], slide_path, mpp, "manifest" if mpp is not None else None))
    return entries


@dataclass(frozen=True)
class SkippedFile:
    """A file of a scanned folder that is not read as a slide, and why."""

    path: Path
    reason: str


def _is_dicom_series(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() == ".dcm" for p in folder.iterdir())


def scan_folder_report(folder: Path, extensions: Sequence[str] = SLIDE_EXTENSIONS,
                       recursive: bool = False) -> tuple[list[Path], list[SkippedFile]]:
    """Slides of ``folder`` (files with a slide ending; sub-folders that are DICOM-WSI series) and the skipped files.

    Nothing is skipped silently: every other non-hidden file is returned with its reason (companion files such as
    MIRAX ``.dat`` or sidecar ``.csv``/``.json`` are not slides and are not listed).
    """
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    candidates: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    slides: list[Path] = []
    skipped: list[SkippedFile] = []
    series_dirs: set[Path] = set()
    for path in sorted(candidates):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_dir():
            if path.suffix.lower() == ".mrxs" or path.parent in series_dirs:
                continue
            if ".dcm" in exts and _is_dicom_series(path) and not any(p.suffix.lower() in exts and p.suffix.lower()
                                                                      != ".dcm" for p in path.iterdir()):
                slides.append(path)
                series_dirs.add(path)
            continue
        if path.parent in series_dirs or any(parent in series_dirs for parent in path.parents):
            continue  # an instance of a DICOM series listed as one slide
        if path.parent != folder and path.parent.suffix == "" and (path.parent.with_suffix(".mrxs")).is_file():
            continue  # MIRAX side folder
        name = path.name.lower()
        if name.endswith(exts):
            slides.append(path)
        elif not name.endswith(_COMPANION_SUFFIXES):
            suffix = path.suffix.lower() or "(no ending)"
            skipped.append(SkippedFile(path, f"{suffix} is not a slide format gpfm reads (readable: "
                                             f"{', '.join(exts)}); convert it or pass it in a CSV manifest"))
    return slides, skipped


def scan_folder(folder: Path, extensions: Sequence[str] = SLIDE_EXTENSIONS, recursive: bool = False) -> list[Path]:
    """Slides in ``folder`` (see :func:`scan_folder_report`), sorted by path."""
    return scan_folder_report(folder, extensions, recursive)[0]


def collect_slides(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    mpp: float | None = None,
    extensions: Sequence[str] = SLIDE_EXTENSIONS,
    recursive: bool = False,
    skipped: list[SkippedFile] | None = None,
) -> list[SlideEntry]:
    """Build the ordered slide list from paths, folders and CSV manifests.

    Args:
        inputs: slide files, folders (scanned in sorted order) and ``.csv`` manifests, in any mix.
        mpp: a global µm/px override for every slide without a manifest ``mpp`` (``mpp_source="cli_override"``).
            A per-slide manifest value is more specific and wins.
        extensions: file endings accepted when scanning folders.
        recursive: scan folders recursively.
        skipped: a list that receives the files of scanned folders that are not slides (with the reason).

    Returns:
        Entries in input order (folders expanded in sorted order).

    Raises:
        SlideListError: a path that does not exist, an empty result, or duplicate slide ids.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    global_mpp = _parse_mpp(mpp, "--mpp") if mpp is not None else None
    entries: list[SlideEntry] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise SlideListError(f"{path}: no such file or folder; pass slide files, a folder or a CSV manifest")
        if path.is_dir() and _is_dicom_series(path) and not scan_folder(path, [e for e in extensions
                                                                             if e != ".dcm"], recursive):
            entries.append(SlideEntry(check_slide_id(path.name, str(path)), path))  # the folder is one series
        elif path.is_dir():
            found, not_slides = scan_folder_report(path, extensions, recursive)
            for item in not_slides:
                log.warning("skipped %s: %s", item.path, item.reason)
            if skipped is not None:
                skipped.extend(not_slides)
            if not found:
                shown = f" (found: {', '.join(p.path.name for p in not_slides[:3])})" if not_slides else ""
                raise SlideListError(
                    f"{path}: folder has no slide files ending in {', '.join(extensions)}{shown}; "
                    "check the folder, or pass --recursive for nested folders"
                )
            entries.extend(SlideEntry(check_slide_id(slide_id_for(p), str(p)), p) for p in found)
        elif path.suffix.lower() == ".csv":
            entries.extend(read_manifest(path))
        else:
            entries.append(SlideEntry(check_slide_id(slide_id_for(path), str(path)), path))
    if not entries:
        raise SlideListError("no slides given; pass slide files, a folder or a CSV manifest")
    dupes = sorted(k for k, n in Counter(e.slide_id for e in entries).items() if n > 1)
    if dupes:
        shown = "; ".join(
            f"{d}: " + ", ".join(str(e.path) for e in entries if e.slide_id == d) for d in dupes[:5]
        )
        raise SlideListError(
            f"duplicate slide ids ({len(dupes)}): {shown}; slide ids name the output files, so they must be unique "
            "— rename the files or give unique ids in a CSV manifest (slide_id,path[,mpp])"
        )
    if global_mpp is not None:
        entries = [e if e.mpp is not None else SlideEntry(e.slide_id, e.path, global_mpp, "cli_override")
                   for e in entries]
    return entries
