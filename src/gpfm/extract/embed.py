"""The embedding loop: uint8 tile batches from a DataLoader → encoder → a features array, row-aligned.

Reading (DataLoader workers) overlaps encoding (main thread), and writing happens on the caller's async writer.
Preprocessing — antialiased bicubic resize from the read size to the model input and normalisation — runs
batched on the encoder's device through :meth:`Encoder.preprocess_uint8`, so every tile is resampled exactly
once, from the pixels read at the chosen pyramid level.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from gpfm.models.encoder import Encoder


@dataclass
class EmbedResult:
    """The features of one slide and how long each part took.

    Attributes:
        features: (N, D) float32, row i is tile i of the grid.
        tile_status: (N,) uint8; 0 ok, 1 padded edge, 2 read failure (white-filled).
        n_tiles: N.
        read_wait_s: time the encoder waited for the reader (0 when reading fully overlaps compute).
        encode_s: time spent preprocessing + encoding (device-synchronised).
        total_s: wall time of the loop.
        qc: (N, 5) float32 QC scores and reason code per tile (:data:`gpfm.extract.dataset.TileBatch`), or None
            when the batches carried none.
    """

    features: np.ndarray
    tile_status: np.ndarray
    n_tiles: int
    read_wait_s: float
    encode_s: float
    total_s: float
    qc: np.ndarray | None = None

    @property
    def tiles_per_s(self) -> float:
        """End-to-end throughput of the loop."""
        return self.n_tiles / self.total_s if self.total_s > 0 else 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def encode_uint8(encoder: Encoder, tiles: torch.Tensor) -> torch.Tensor:
    """Features (B, D) fp32 on CPU of a uint8 (B, H, W, 3) tile batch (resize + normalise + embed)."""
    x = encoder.preprocess_uint8(tiles)
    return encoder.embed(x).cpu()


def embed_batches(
    encoder: Encoder,
    batches: Iterable[tuple[torch.Tensor, ...]],
    n_tiles: int,
    on_batch: Callable[[int], None] | None = None,
) -> EmbedResult:
    """Embed every tile delivered by ``batches`` into a row-aligned features array.

    Args:
        encoder: the encoder (its device and precision are used).
        batches: yields ``(indices int64 (B,), tiles uint8 (B, H, W, 3), status uint8 (B,)[, qc (B, 5)])``;
            indices are grid rows, in any order; every row in ``[0, n_tiles)`` must be delivered exactly once.
        n_tiles: number of grid rows.
        on_batch: called with the batch size after each batch (progress).

    Raises:
        RuntimeError: a row was delivered twice or never (a reader bug must not become a zero feature).
    """
    features = np.zeros((n_tiles, encoder.embed_dim), dtype=np.float32)
    status = np.zeros(n_tiles, dtype=np.uint8)
    seen = np.zeros(n_tiles, dtype=bool)
    qc: np.ndarray | None = None
    read_wait = encode = 0.0
    start = time.perf_counter()
    iterator = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        indices, tiles, tile_status = batch[:3]
        t1 = time.perf_counter()
        feats = encode_uint8(encoder, tiles)
        _sync(encoder.device)
        t2 = time.perf_counter()
        read_wait += t1 - t0
        encode += t2 - t1
        idx = indices.numpy()
        if seen[idx].any() or len(np.unique(idx)) != len(idx):
            raise RuntimeError(f"tile rows delivered twice: {idx[seen[idx]][:5].tolist()}")
        seen[idx] = True
        features[idx] = feats.numpy()
        status[idx] = tile_status.numpy()
        if len(batch) > 3:
            if qc is None:
                qc = np.zeros((n_tiles, batch[3].shape[1]), dtype=np.float32)
            qc[idx] = batch[3].numpy()
        if on_batch is not None:
            on_batch(len(idx))
    if not seen.all():
        missing = np.flatnonzero(~seen)
        raise RuntimeError(f"{len(missing)} of {n_tiles} tile rows were never read (first: {missing[:5].tolist()})")
    return EmbedResult(features, status, n_tiles, read_wait, encode, time.perf_counter() - start, qc)
