"""Coordinate and feature HDF5 files: names, layout, atomic writes, completion test.

Layout (TRIDENT-compatible names; CLAM-style readers use only ``features`` and ``coords``)::

    <slide>_patches.h5   coords (N, 2) int64 [x, y level-0 top-left], chunks ~4096 rows, maxshape (None, 2)
                           + attrs of TileGrid.attrs() and complete=True (written last)
                         tissue_fraction (N,) float32, grid_rc (N, 2) int32, tile_status (N,) uint8
    <slide>.h5           features (N, D) float32, chunks ~1024 rows × D, attrs: name, encoder, dim,
                           weights_sha256, tiling_config_sha256, n_failed_tiles, …, complete=True (last)
                         coords: a full copy with all coordinate attributes; tile_status; optional extras

Every write builds the file in memory and writes it through :func:`gpfm.atomic.atomic_h5` (fsync + atomic rename), so
a file under its final name is always whole. Files are opened with HDF5 file locking disabled (NFS-safe;
the rename makes HDF5 locks unnecessary). :func:`is_complete` is the only test of "done": the file opens,
has the required datasets, ``complete`` is true, and the hashes match.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gpfm.atomic import atomic_h5
from gpfm.hashing import array_sha256, verify_array

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # for HDF5 builds where locking=False is unavailable

COORDS = "coords"
FEATURES = "features"
TISSUE_FRACTION = "tissue_fraction"
GRID_RC = "grid_rc"
TILE_STATUS = "tile_status"
VALID_FRACTION = "valid_fraction"  # part of each tile on the slide (< 1 for padded edge tiles)
PATCH_TOKENS = "patch_tokens"
ATTR_COMPLETE = "complete"
ATTR_TILING_SHA = "tiling_config_sha256"
ATTR_WEIGHTS_SHA = "weights_sha256"
ATTR_N_FAILED = "n_failed_tiles"
ATTR_FEATURES_SHA = "features_sha256"  # SHA-256 of the features array's C-order bytes, recorded at write time
COORDS_CHUNK_ROWS = 4096
FEATURES_CHUNK_ROWS = 1024


def chunk_rows(n: int, target: int) -> int:
    """Rows per chunk: at most ``target``, and as equal as possible so the last chunk is (nearly) full.

    HDF5 allocates whole chunks; with fixed 1,024-row chunks a 2,201-row matrix would allocate 3,072 rows (40 %
    padding). ``ceil(n / ceil(n / target))`` rows per chunk pads by fewer rows than there are chunks.
    """
    if n <= 0:
        return 1
    n_chunks = -(-n // target)
    return -(-n // n_chunks)


def open_h5(path: str | os.PathLike[str], mode: str = "r") -> h5py.File:
    """Open an HDF5 file with file locking disabled."""
    try:
        return h5py.File(path, mode, locking=False)
    except TypeError:  # very old h5py: the environment variable set above does the job
        return h5py.File(path, mode)


def _attr(value: Any) -> Any:
    """An HDF5-storable attribute value (None → "", mappings/lists of str → JSON, paths → str)."""
    if value is None:
        return ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping) or (
        isinstance(value, list | tuple) and any(isinstance(v, str) for v in value)
    ):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _write_coords_dataset(h5: h5py.File, coords: np.ndarray, attrs: Mapping[str, Any]) -> h5py.Dataset:
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    rows = chunk_rows(coords.shape[0], COORDS_CHUNK_ROWS)
    ds = h5.create_dataset(COORDS, data=coords, maxshape=(None, 2), chunks=(rows, 2))
    for key, value in attrs.items():
        if key != ATTR_COMPLETE:
            ds.attrs[key] = _attr(value)
    return ds


def write_coords(path: str | os.PathLike[str], grid: Any, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write a coordinates file atomically from a :class:`~gpfm.wsi.tiling.TileGrid`.

    Args:
        path: final file path (``<tiling>/patches/<slide>_patches.h5``).
        grid: the tile grid.
        attrs: extra / overriding attributes for ``coords`` (e.g. ``savetodir``, ``slide_relpath``).
    """
    merged = {**grid.attrs(), **(attrs or {})}
    with atomic_h5(path) as h5:
        ds = _write_coords_dataset(h5, grid.coords, merged)
        h5.create_dataset(TISSUE_FRACTION, data=np.asarray(grid.tissue_fraction, np.float32))
        h5.create_dataset(GRID_RC, data=np.asarray(grid.grid_rc, np.int32).reshape(-1, 2))
        h5.create_dataset(TILE_STATUS, data=np.asarray(grid.tile_status, np.uint8))
        h5.create_dataset(VALID_FRACTION, data=np.asarray(grid.valid_fraction, np.float32))
        h5.flush()
        ds.attrs[ATTR_COMPLETE] = True
    return Path(path)


def read_coords(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """(coords int64 (N, 2), attributes of ``coords``) from a coordinates or features file."""
    with open_h5(path) as h5:
        if COORDS not in h5:
            raise KeyError(
                f"{path}: no '{COORDS}' dataset; run the tiling stage first (gpfm extract does it)"
            )
        return np.asarray(h5[COORDS][:], dtype=np.int64).reshape(-1, 2), _read_attrs(h5[COORDS])


def read_tiling(path: str | os.PathLike[str]) -> dict[str, Any]:
    """All datasets of a coordinates file (coords, tissue_fraction, grid_rc, tile_status) and attrs."""
    with open_h5(path) as h5:
        out: dict[str, Any] = {"attrs": _read_attrs(h5[COORDS])}
        for name in (COORDS, TISSUE_FRACTION, GRID_RC, TILE_STATUS, VALID_FRACTION):
            if name in h5:
                out[name] = h5[name][:]
    return out


def load_tile_grid(path: str | os.PathLike[str]) -> Any:
    """Rebuild the :class:`~gpfm.wsi.tiling.TileGrid` stored in a coordinates file."""
    from gpfm.wsi.tiling import TileGrid, TilingConfig

    data = read_tiling(path)
    a = data["attrs"]
    cfg = json.loads(a["tiling_config_json"])
    n = len(data[COORDS])
    bounds = (
        tuple(int(a[k]) for k in ("bounds_x", "bounds_y", "bounds_w", "bounds_h"))
        if "bounds_x" in a
        else None
    )
    return TileGrid(
        coords=data[COORDS].astype(np.int64),
        tissue_fraction=data.get(TISSUE_FRACTION, np.ones(n, np.float32)),
        grid_rc=data.get(GRID_RC, np.zeros((n, 2), np.int32)),
        tile_status=data.get(TILE_STATUS, np.zeros(n, np.uint8)),
        config=TilingConfig(**cfg["tiling"]),
        target_mpp=float(a["target_mpp"]),
        fov_um=float(a["fov_um"]),
        read_level=int(a["read_level"]),
        read_downsample=float(a["read_downsample"]),
        read_size_px=int(a["read_size_px"]),
        patch_size_level0=int(a["patch_size_level0"]),
        tile_size_level0_exact=float(a["tile_size_level0_exact"]),
        stride_level0_exact=float(a["stride_level0_exact"]),
        slide_id=str(a["name"]),
        mpp=float(a["mpp_level0_x"]),
        mpp_y=float(a["mpp_level0_y"]),
        mpp_source=str(a["mpp_source"]),
        level0_width=int(a["level0_width"]),
        level0_height=int(a["level0_height"]),
        reader=str(a.get("reader", "")),
        reader_version=str(a.get("reader_version", "")),
        slide_path=str(a.get("slide_relpath", "")),
        slide_fingerprint=str(a.get("slide_fingerprint", "")),
        bounds=bounds,
        seg_method=cfg["segmentation"]["method"],
        seg_params=cfg["segmentation"]["params"],
        valid_fraction=data.get(VALID_FRACTION),
        background_rgb=tuple(int(v) for v in a.get("background_rgb", (255, 255, 255))),
    )


def write_features(
    path: str | os.PathLike[str],
    features: np.ndarray,
    coords: np.ndarray,
    coords_attrs: Mapping[str, Any],
    feature_attrs: Mapping[str, Any],
    tile_status: np.ndarray | None = None,
    extra_datasets: Mapping[str, np.ndarray] | None = None,
    *,
    compression: str | None = None,
) -> Path:
    """Write a self-contained features file atomically; ``complete=True`` is the last thing written.

    Args:
        path: final path (``<tiling>/features_<encoder>/<slide>.h5``).
        features: (N, D) array, stored float32 (pass float16 explicitly to store fp16; it is flagged).
        coords: (N, 2) level-0 top-left coordinates, row-aligned with ``features``.
        coords_attrs: attributes of the coordinates (``TileGrid.attrs()`` or ``read_coords(...)[1]``).
        feature_attrs: encoder/provenance attributes (name, encoder, weights_sha256, tiling_config_sha256, …).
        tile_status: optional (N,) uint8 (0 ok, 1 padded edge, 2 read failure → white fill).
        extra_datasets: more datasets, e.g. ``patch_tokens``.
        compression: None (default) or ``"lzf"``.
    """
    features = np.asarray(features)
    if features.dtype != np.float16:
        features = features.astype(np.float32, copy=False)
    features = features.reshape(features.shape[0], -1) if features.ndim != 2 else features
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if features.shape[0] != coords.shape[0]:
        raise ValueError(f"{path}: {features.shape[0]} feature rows but {coords.shape[0]} coordinates")
    n, dim = features.shape
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise ValueError(f"{path}: {bad} of {n} feature rows are not finite (NaN/inf); refusing to write them — "
                         "check the encoder precision (try --precision fp32)")
    attrs = dict(feature_attrs)
    attrs[ATTR_FEATURES_SHA] = array_sha256(features)
    attrs.setdefault("dim", int(dim))
    attrs.setdefault("dtype", str(features.dtype))
    if tile_status is not None:
        tile_status = np.asarray(tile_status, np.uint8).reshape(-1)
        if tile_status.shape[0] != n:
            raise ValueError(f"{path}: tile_status has {tile_status.shape[0]} rows, expected {n}")
        attrs.setdefault(ATTR_N_FAILED, int((tile_status == 2).sum()))
    with atomic_h5(path) as h5:
        _write_coords_dataset(h5, coords, {**coords_attrs, ATTR_COMPLETE: None})
        h5[COORDS].attrs[ATTR_COMPLETE] = True
        chunks = (chunk_rows(n, FEATURES_CHUNK_ROWS), max(1, dim))
        ds = h5.create_dataset(
            FEATURES,
            data=features,
            chunks=chunks if n and dim else None,
            maxshape=(None, dim),
            compression=compression,
        )
        for key, value in attrs.items():
            if key != ATTR_COMPLETE:
                ds.attrs[key] = _attr(value)
        if tile_status is not None:
            h5.create_dataset(TILE_STATUS, data=tile_status)
        for name, data in (extra_datasets or {}).items():
            h5.create_dataset(name, data=np.asarray(data))
        h5.flush()
        ds.attrs[ATTR_COMPLETE] = True
    return Path(path)


def verify_features(path: str | os.PathLike[str], features: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """Raise :class:`~gpfm.hashing.CorruptArtifactError` when ``features`` (all rows of ``path``) are damaged.

    Checks finiteness always and the recorded ``features_sha256`` when the file has one (files of older
    versions do not).
    """
    recorded = attrs.get(ATTR_FEATURES_SHA)
    if isinstance(recorded, bytes):
        recorded = recorded.decode()
    verify_array(path, features, recorded or None, fix="delete it and rerun `gpfm extract` to rebuild it")


def read_features(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"features", "coords", "attrs" (features), "coords_attrs", "tile_status"?, <extra datasets>}``."""
    with open_h5(path) as h5:
        if FEATURES not in h5:
            raise KeyError(f"{path}: no '{FEATURES}' dataset; this is not a features file")
        out: dict[str, Any] = {
            "features": h5[FEATURES][:],
            "attrs": _read_attrs(h5[FEATURES]),
            "coords": h5[COORDS][:] if COORDS in h5 else None,
            "coords_attrs": _read_attrs(h5[COORDS]) if COORDS in h5 else {},
        }
        for name in h5:
            if name not in (FEATURES, COORDS):
                out[name] = h5[name][:]
    return out


def recorded_slide_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """The ``slide_fingerprint`` recorded in a coordinates or features file (None when unreadable)."""
    try:
        with open_h5(path) as h5:
            value = h5[COORDS].attrs.get("slide_fingerprint", "") if COORDS in h5 else ""
    except Exception:  # noqa: BLE001 - unreadable means "no record"
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def is_complete(
    path: str | os.PathLike[str], tiling_config_sha256: str | None = None, weights_sha256: str | None = None
) -> bool:
    """True only for a whole, finished file made with the given configuration.

    The file must open, hold ``coords`` (and ``features`` when it is a features file or ``weights_sha256`` is
    given) with matching row counts, carry ``complete=True`` on its main dataset, and match the given hashes.
    A missing, truncated or foreign file gives False, never an exception.
    """
    try:
        with open_h5(path) as h5:
            if COORDS not in h5:
                return False
            main = h5[FEATURES] if FEATURES in h5 else h5[COORDS]
            if weights_sha256 is not None and FEATURES not in h5:
                return False
            if not bool(main.attrs.get(ATTR_COMPLETE, False)):
                return False
            if FEATURES in h5 and h5[FEATURES].shape[0] != h5[COORDS].shape[0]:
                return False
            if tiling_config_sha256 is not None:
                stored = main.attrs.get(ATTR_TILING_SHA, h5[COORDS].attrs.get(ATTR_TILING_SHA))
                if isinstance(stored, bytes):
                    stored = stored.decode()
                if stored != tiling_config_sha256:
                    return False
            if weights_sha256 is not None:
                stored = main.attrs.get(ATTR_WEIGHTS_SHA)
                if isinstance(stored, bytes):
                    stored = stored.decode()
                if stored != weights_sha256:
                    return False
            _ = main[-1:] if main.shape[0] else None  # touch the data: a truncated file fails here
            return True
    except Exception:  # noqa: BLE001 - any failure to read means "not complete"
        return False
