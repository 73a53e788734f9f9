"""The read path: a torch ``Dataset`` over blocks of neighbouring tiles, batched into tile-count-bounded batches.

One item is one k×k block of neighbouring kept tiles read with a single region read at the grid's read level
(:func:`gpfm.wsi.blocks.read_block_tiles_safe`, which falls back to per-tile
reads with retries for a damaged block), which cuts decode calls by up to k² versus one read per tile. The
:class:`~gpfm.wsi.Slide` pickles as its path and options and reopens lazily after a fork, so each DataLoader
worker opens the slide on first use. Batches hold at most ``batch_size`` tiles (whole blocks, packed greedily in
plan order), and the collate function concatenates blocks into ``(indices, uint8 tiles, status)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

#: ``(indices int64 (B,), tiles uint8 (B, H, W, 3), status uint8 (B,), qc float32 (B, 5))``; the QC columns are
#: :data:`gpfm.wsi.qc.SCORE_COLUMNS` then the reason code (all zero when QC is off).
TileBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
QC_COLUMNS = 5


def default_workers() -> int:
    """0.75 × the CPU cores this process may use, at least 1 and at most 16."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return max(1, min(16, int(cores * 0.75)))


class TileBlockDataset(Dataset):
    """Blocks of neighbouring tiles of one slide.

    Args:
        slide: the slide (opened lazily in each worker).
        grid: the kept tiles (:class:`~gpfm.wsi.TileGrid`).
        blocks: the read plan from :func:`gpfm.wsi.blocks.plan_blocks`.
    """

    def __init__(self, slide: Any, grid: Any, blocks: Sequence[Any], qc: Any = None) -> None:
        self.slide = slide
        self.grid = grid
        self.blocks = list(blocks)
        self.qc = qc

    def __len__(self) -> int:
        return len(self.blocks)

    def block_size(self, i: int) -> int:
        """Number of tiles in block ``i``."""
        return len(self.blocks[i])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from gpfm.wsi.blocks import fill_outside, read_block_tiles_safe

        indices, tiles, status = read_block_tiles_safe(self.slide, self.grid, self.blocks[i])
        indices = np.asarray(indices, dtype=np.int64)
        fill_outside(self.slide, self.grid, indices, tiles)  # edge tiles: slide background past the image
        # a read failure (2) outranks the padded-edge flag (1) the grid carries
        status = np.maximum(np.asarray(status, dtype=np.uint8), np.asarray(self.grid.tile_status)[indices])
        qc = np.zeros((len(indices), QC_COLUMNS), dtype=np.float32)
        if self.qc is not None:  # scored here, in the reader worker, beside the decode
            from gpfm.wsi.qc import qc_tiles

            scores, reasons = qc_tiles(tiles, self.qc)
            qc[:, :-1], qc[:, -1] = scores, reasons
        return indices, tiles, status.astype(np.uint8), qc


class PackedBlockSampler(Sampler[list[int]]):
    """Yields lists of block ids whose tiles add up to at most ``batch_size`` (a larger block goes alone)."""

    def __init__(self, block_sizes: Sequence[int], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batches: list[list[int]] = []
        current: list[int] = []
        filled = 0
        for i, size in enumerate(block_sizes):
            if current and filled + size > batch_size:
                self.batches.append(current)
                current, filled = [], 0
            current.append(i)
            filled += size
        if current:
            self.batches.append(current)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def collate_blocks(items: list[tuple[np.ndarray, ...]]) -> TileBatch:
    """Concatenate blocks into a :data:`TileBatch`."""
    indices = torch.from_numpy(np.concatenate([it[0] for it in items]))
    tiles = torch.from_numpy(np.ascontiguousarray(np.concatenate([it[1] for it in items])))
    status = torch.from_numpy(np.concatenate([it[2] for it in items]))
    qc = np.concatenate([it[3] if len(it) > 3 else np.zeros((len(it[0]), QC_COLUMNS), np.float32) for it in items])
    return indices, tiles, status, torch.from_numpy(qc)


def rebatch(batches: Iterable[TileBatch], size: int) -> Iterator[TileBatch]:
    """Re-cut ``(indices, tiles, status)`` batches into batches of exactly ``size`` tiles (the last may be smaller).

    Block packing gives uneven batches when blocks are large relative to the batch (k² = 16 tiles vs a CPU batch
    of 8); a CPU encoder runs best on full, equal batches. (On CUDA the pinned packed batches are used as they
    are: with batches of 256 the packing is already ≥ 94% full.)
    """
    pending: list[TileBatch] = []
    filled = 0
    for batch in batches:
        pending.append(batch)
        filled += len(batch[0])
        while filled >= size:
            width = len(pending[0])
            merged = [torch.cat([b[j] for b in pending]) for j in range(width)] if len(pending) > 1 else list(
                pending[0])
            yield tuple(m[:size] for m in merged)
            rest = tuple(m[size:] for m in merged)
            filled -= size
            pending = [rest] if filled else []
    if filled:
        yield tuple(torch.cat([b[j] for b in pending]) for j in range(len(pending[0])))


def tile_loader(
    slide: Any,
    grid: Any,
    *,
    batch_size: int,
    workers: int,
    block_k: int = 4,
    pin_memory: bool = False,
    prefetch_batches: int = 2,
    qc: Any = None,
) -> DataLoader:
    """A DataLoader of uint8 tile batches covering every tile of ``grid`` exactly once.

    Args:
        slide: the slide the grid was made on.
        grid: kept tiles.
        batch_size: most tiles per batch.
        workers: DataLoader worker processes (0 reads in this process).
        block_k: block side in tiles (1 = one read per tile).
        pin_memory: pin batches for fast host-to-device copies (CUDA).
        prefetch_batches: batches each worker reads ahead.
        qc: a :class:`gpfm.wsi.qc.QCParams` to score every tile in the reader (None: no QC).
    """
    from gpfm.wsi.blocks import plan_blocks

    dataset = TileBlockDataset(slide, grid, plan_blocks(grid, block_k), qc)
    sampler = PackedBlockSampler([dataset.block_size(i) for i in range(len(dataset))], batch_size)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs = {"prefetch_factor": prefetch_batches, "persistent_workers": False}
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_blocks,
                      pin_memory=pin_memory, **kwargs)
