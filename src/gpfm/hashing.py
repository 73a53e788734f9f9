"""Digests: streaming file hashes (weights, slides, caches, the demo download) and verified stored arrays."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from gpfm.errors import GpfmError

_BLOCK = 1 << 22


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 4 MiB blocks (never the whole file in memory)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's C-order bytes (recorded beside every stored feature matrix)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


class CorruptArtifactError(GpfmError, ValueError):
    """A stored array does not match the checksum recorded when it was written, or holds NaN/inf."""


def verify_array(path: str | os.PathLike[str], array: np.ndarray, recorded_sha256: str | None, *, fix: str) -> None:
    """Raise :class:`CorruptArtifactError` when ``array`` (read from ``path``) is damaged.

    Args:
        path: where the array was read from (named in the message).
        array: the whole stored array.
        recorded_sha256: :func:`array_sha256` recorded at write time (None: only finiteness is checked).
        fix: what the user should do, e.g. "delete it and rerun `gpfm extract`".
    """
    if recorded_sha256 and array_sha256(array) != recorded_sha256:
        raise CorruptArtifactError(
            f"{path}: data do not match the checksum recorded when it was written (damaged or edited); {fix}"
        )
    if array.size and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise CorruptArtifactError(f"{path}: data hold NaN/inf values; {fix}")
