"""Streaming file digests, shared by weights, slides, image caches and the demo download."""

from __future__ import annotations

import hashlib
import os

_BLOCK = 1 << 22


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 4 MiB blocks (never the whole file in memory)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
