"""The read path: block packing, the embedding loop's row bookkeeping, and worker reads equal in-process reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpfm.extract.dataset import PackedBlockSampler, collate_blocks
from gpfm.extract.embed import embed_batches
from gpfm.models import create_encoder


def test_packed_batches_respect_the_tile_budget():
    sizes = [16, 4, 4, 9, 1, 1, 30, 2]
    batches = list(PackedBlockSampler(sizes, 16))
    assert batches == [[0], [1, 2], [3, 4, 5], [6], [7]]
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in b) <= 16 or len(b) == 1 for b in batches)


def test_collate_concatenates_blocks():
    a = (np.array([3, 4]), np.zeros((2, 5, 5, 3), np.uint8), np.array([0, 1], np.uint8))
    b = (np.array([0]), np.ones((1, 5, 5, 3), np.uint8), np.array([2], np.uint8))
    idx, tiles, status, qc = collate_blocks([a, b])
    assert idx.tolist() == [3, 4, 0] and tiles.shape == (3, 5, 5, 3) and status.tolist() == [0, 1, 2]
    assert qc.shape == (3, 5) and not qc.any()  # blocks read without QC carry zero scores


def _batch(rows, value=128):
    n = len(rows)
    return torch.tensor(rows), torch.full((n, 70, 70, 3), value, dtype=torch.uint8), torch.zeros(n, dtype=torch.uint8)


def test_rows_land_where_their_indices_say(tiny_encoder):
    enc = create_encoder(tiny_encoder, "random", device="cpu", precision="fp32")
    res = embed_batches(enc, [_batch([2, 0], 10), _batch([1], 200)], 3)
    assert np.allclose(res.features[0], res.features[2]) and not np.allclose(res.features[0], res.features[1])


@pytest.mark.parametrize(("batches", "match"), [([[0, 1], [1]], "twice"), ([[0]], "never read")])
def test_duplicate_or_missing_rows_are_errors_not_zero_features(tiny_encoder, batches, match):
    enc = create_encoder(tiny_encoder, "random", device="cpu", precision="fp32")
    with pytest.raises(RuntimeError, match=match):
        embed_batches(enc, [_batch(b) for b in batches], 2)


@pytest.mark.realdata
def test_worker_processes_read_the_same_tiles(cmu, tiny_encoder):
    from gpfm.extract.slide import embed_slide
    from gpfm.wsi import TilingConfig, open_slide, tile_slide
    from gpfm.wsi.tissue import segment_tissue

    slide = open_slide(cmu)
    grid = tile_slide(slide, segment_tissue(slide), TilingConfig())
    enc = create_encoder(tiny_encoder, "random", device="cpu", precision="fp32")
    here = embed_slide(slide, grid, enc, batch_size=16, workers=0, block_k=1)  # one read per tile
    workers = embed_slide(slide, grid, enc, batch_size=16, workers=2, block_k=4)  # block reads in 2 workers
    np.testing.assert_allclose(workers.features, here.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(workers.tile_status, grid.tile_status)  # only the padded edge tiles are flagged
    assert set(np.unique(workers.tile_status).tolist()) <= {0, 1} and len(grid) == here.n_tiles


def test_rebatch_cuts_exact_batches_and_keeps_every_row():
    from gpfm.extract.dataset import rebatch

    def item(rows):
        n = len(rows)
        tiles = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 3).contiguous() + rows[0]
        return torch.tensor(rows), tiles, torch.tensor([r % 3 for r in rows], dtype=torch.uint8)

    items = [item([0, 1, 2]), item(list(range(3, 16))), item([16]), item([17, 18])]
    out = list(rebatch(items, 8))
    assert [len(b[0]) for b in out] == [8, 8, 3]
    idx = torch.cat([b[0] for b in out])
    assert idx.tolist() == list(range(19))
    tiles = torch.cat([b[1] for b in out])
    status = torch.cat([b[2] for b in out])
    assert torch.equal(tiles, torch.cat([i[1] for i in items])) and status.tolist() == [r % 3 for r in range(19)]
