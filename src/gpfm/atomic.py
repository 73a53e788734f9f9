"""Atomic file output: write a unique temp name in the same folder, fsync, rename over the final name.

A half-written file is never visible under its final name, so nothing partial is ever taken for complete.
A full disk surfaces as one :class:`~gpfm.errors.DiskFullError` naming the folder, never as a crash: HDF5
files are built in memory (:func:`atomic_h5`) and written with plain Python I/O, because the HDF5 library
can crash the process (segmentation fault) when its own writes fail with ``ENOSPC``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpfm.errors import DiskFullError, disk_full_message, translate_disk_full


def temp_name(final: Path) -> Path:
    """``<final>.tmp-<host>-<pid>-<rand>`` in the same directory (unique across hosts and processes)."""
    return final.with_name(f"{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(directory: Path) -> None:
    """Fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path to write; on success fsync it and atomically rename it to ``final``.

    On an exception the temp file is removed and ``final`` is untouched.

    Example:
        >>> with atomic_path("out/features.h5") as tmp:  # doctest: +SKIP
        ...     write_h5(tmp)
    """
    final = Path(final)
    tmp = temp_name(final)
    try:
        with translate_disk_full(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def ensure_free_space(final: str | os.PathLike[str], n_bytes: int, margin: int = 1 << 20) -> None:
    """Raise :class:`DiskFullError` before writing when ``final``'s folder has less than ``n_bytes`` + margin free."""
    import shutil

    folder = Path(final).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # unknown (e.g. the folder does not exist yet): the write itself will tell
    if free < n_bytes + margin:
        raise DiskFullError(disk_full_message(final) + f" (needs {n_bytes / 1e6:.1f} MB, {free / 1e6:.1f} MB free)")


@contextlib.contextmanager
def atomic_h5(final: str | os.PathLike[str]) -> Iterator[Any]:
    """Yield an in-memory ``h5py.File``; on success its image is written to ``final`` atomically.

    HDF5 writes nothing to disk itself, so a full disk raises :class:`DiskFullError` from a plain Python write
    (and a free-space check before it) instead of crashing inside the HDF5 library.
    """
    import h5py

    final = Path(final)
    h5 = h5py.File(f"gpfm-mem-{secrets.token_hex(8)}.h5", "w", driver="core", backing_store=False)
    try:
        yield h5
        h5.flush()
        image = h5.id.get_file_image()
    finally:
        h5.close()
    with translate_disk_full(final):
        final.parent.mkdir(parents=True, exist_ok=True)
    ensure_free_space(final, len(image))
    write_bytes_atomic(final, image)


def write_bytes_atomic(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    write_bytes_atomic(final, text.encode("utf-8"))


def write_json_atomic(final: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``final`` atomically."""
    write_text_atomic(final, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")
