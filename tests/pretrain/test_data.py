"""Pretraining data: tile folders, slides + coordinate files, fallback + failure log, sampler, collate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gpfm.pretrain.augment import MultiCropAugmentation
from gpfm.pretrain.data import (
    InfiniteShardedSampler,
    SlideTileDataset,
    TileFolderDataset,
    collate_multicrop,
    sample_seed,
    seed_worker,
)
from gpfm.pretrain.masking import BatchMasker


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _aug() -> MultiCropAugmentation:
    return MultiCropAugmentation(global_crops_size=32, local_crops_size=16, local_crops_number=2)


def _write_tiles(root: Path, n: int = 5) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        ext = [".png", ".jpg", ".tif"][i % 3]
        path = root / f"sub{i % 2}" / f"tile{i}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return sorted(paths)


def test_sample_seed_is_stable_and_distinct() -> None:
    assert sample_seed(0, 5) == sample_seed(0, 5)
    seeds = {sample_seed(b, i) for b in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2**63 for s in seeds)


def test_tile_folder_sources_and_pure_function_of_index(tmp_path: Path) -> None:
    paths = _write_tiles(tmp_path / "tiles")
    ds = TileFolderDataset(tmp_path / "tiles", _aug(), base_seed=3)
    assert ds.paths == paths and len(ds) == 5
    sample = ds[2]
    expected = _aug()(Image.open(paths[2]).convert("RGB"), sample_seed(3, 2))
    assert torch.equal(sample["global_crops"][1], expected["global_crops"][1])
    assert sample["index"] == 2 and sample["seed"] == sample_seed(3, 2) and not sample["failed"]
    # the same index gives the same sample; another base seed another one
    assert torch.equal(ds[2]["local_crops"][0], sample["local_crops"][0])
    assert not torch.equal(
        TileFolderDataset(paths, _aug(), base_seed=4)[2]["global_crops"][0], sample["global_crops"][0]
    )
    # upstream JSON index and a text list
    index = tmp_path / "index.json"
    index.write_text(json.dumps({str(tmp_path / "tiles" / "sub0"): ["tile0.png", "tile2.tif"]}))
    assert [p.name for p in TileFolderDataset(index, _aug()).paths] == ["tile0.png", "tile2.tif"]
    listing = tmp_path / "list.txt"
    listing.write_text("# tiles\n" + "\n".join(str(p) for p in paths[:2]) + "\n")
    assert TileFolderDataset(listing, _aug()).paths == paths[:2]
    with pytest.raises(FileNotFoundError, match="tile source"):
        TileFolderDataset(tmp_path / "missing", _aug())


def test_failed_tile_uses_fallback_and_is_logged(tmp_path: Path) -> None:
    paths = _write_tiles(tmp_path / "tiles", 3)
    bad = tmp_path / "tiles" / "aaa_broken.jpg"  # sorts first: the fallback must skip it
    bad.write_bytes(b"not a jpeg")
    log_file = tmp_path / "logs" / "failed.tsv"
    ds = TileFolderDataset(tmp_path / "tiles", _aug(), failure_log=log_file)
    assert ds.paths[0] == bad
    sample = ds[0]
    assert sample["failed"]
    fallback = _aug()(Image.open(ds.paths[1]).convert("RGB"), sample_seed(0, 0))
    assert torch.equal(sample["global_crops"][0], fallback["global_crops"][0])
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and ds.failures.count == 1
    assert not ds[1]["failed"] and paths[0] == ds.paths[1]


def test_sampler_shards_cover_each_epoch_and_resume_exactly() -> None:
    n, world = 12, 3
    streams = []
    for rank in range(world):
        it = iter(InfiniteShardedSampler(n, seed=7, rank=rank, world_size=world))
        streams.append([next(it) for _ in range(8)])  # 2 epochs worth: 3 ranks x 8 = 24 = 2n
    first_epoch = sorted(i for s in streams for i in s[:4])
    assert first_epoch == list(range(n))
    assert sorted(i for s in streams for i in s[4:]) == list(range(n))
    assert [s[:4] for s in streams] != [s[4:] for s in streams]  # a new permutation per epoch
    resumed = iter(InfiniteShardedSampler(n, seed=7, rank=1, world_size=world, start_index=5))
    assert [next(resumed) for _ in range(3)] == streams[1][5:8]
    other = iter(InfiniteShardedSampler(n, seed=8, rank=1, world_size=world))
    assert [next(other) for _ in range(8)] != streams[1]
    with pytest.raises(ValueError, match="rank"):
        InfiniteShardedSampler(n, 0, rank=3, world_size=3)


def test_collate_is_crop_major_with_reproducible_masks(tmp_path: Path) -> None:
    _write_tiles(tmp_path / "tiles", 3)
    ds = TileFolderDataset(tmp_path / "tiles", _aug())
    samples = [ds[i] for i in range(3)]
    masker = BatchMasker((2, 2), mask_probability=0.5, ratio_min_max=(0.25, 0.5), min_num_patches=1)
    batch = collate_multicrop(samples, masker)
    assert batch["global_crops"].shape == (6, 3, 32, 32) and batch["local_crops"].shape == (6, 3, 16, 16)
    for c in range(2):
        for b in range(3):
            assert torch.equal(batch["global_crops"][c * 3 + b], samples[b]["global_crops"][c])
            assert torch.equal(batch["local_crops"][c * 3 + b], samples[b]["local_crops"][c])
    masks = batch["masks"]
    assert masks.shape == (6, 4) and masks.dtype == torch.bool
    assert batch["n_masked"] == int(masks.sum()) == len(batch["mask_indices"]) == len(batch["masks_weight"])
    assert torch.equal(batch["indices"], torch.tensor([0, 1, 2]))
    for flat, w in zip(batch["mask_indices"].tolist(), batch["masks_weight"].tolist(), strict=True):
        assert masks.flatten()[flat] and w == pytest.approx(1.0 / int(masks[flat // 4].sum()))
    assert batch["upperbound"] == masker.upper_bound(6) >= batch["n_masked"]
    assert torch.equal(collate_multicrop(samples, masker)["masks"], masks)  # reproducible from sample seeds
    # a one-argument mask function that owns its randomness is accepted too
    fixed = collate_multicrop(samples, lambda n: torch.ones(n, 4, dtype=torch.bool))
    assert fixed["n_masked"] == 24 and fixed["masks_weight"].eq(0.25).all()
    with pytest.raises(ValueError, match="bool"):
        collate_multicrop(samples, lambda n: torch.ones(n, 4))
    no_mask = collate_multicrop(samples, None)
    assert no_mask["masks"] is None and no_mask["n_masked"] == 0


def _image_slide(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    from gpfm.wsi import TilingConfig, open_slide, tile_slide, write_coords

    pixels = np.random.default_rng(1).integers(0, 256, (600, 520, 3), dtype=np.uint8)
    slide_path = tmp_path / "slide.png"
    Image.fromarray(pixels).save(slide_path)
    slide = open_slide(slide_path, mpp=0.5)
    grid = tile_slide(slide, None, TilingConfig.from_recipe("gpfm-128um", edge_policy="exclude"))  # whole tiles
    coords_path = tmp_path / "slide_patches.h5"
    write_coords(coords_path, grid)
    return slide_path, coords_path, pixels


def test_slide_tiles_are_read_at_their_stored_geometry(tmp_path: Path) -> None:
    slide_path, coords_path, pixels = _image_slide(tmp_path)
    ds = SlideTileDataset([(slide_path, coords_path), (slide_path, coords_path)], _aug(), base_seed=1)
    assert len(ds) == 8 and ds.locate(5) == (1, 1)
    for i in (0, 3, 6):
        _, t = ds.locate(i)
        x, y = ds.entries[0].coords[t].tolist()
        assert np.array_equal(np.asarray(ds.load(i)), pixels[y : y + 256, x : x + 256])
    half = SlideTileDataset([(slide_path, coords_path)], _aug(), mpp=1.0)
    assert half.load(0).size == (128, 128)
    # the per-index samples equal the augmentation of the read tile
    expected = _aug()(ds.load(3), sample_seed(1, 3))
    assert torch.equal(ds[3]["global_crops"][0], expected["global_crops"][0])


def test_missing_slide_falls_back_and_workers_reproduce(tmp_path: Path) -> None:
    slide_path, coords_path, _ = _image_slide(tmp_path)
    ds = SlideTileDataset(
        [(slide_path, coords_path), (tmp_path / "gone.png", coords_path)],
        _aug(),
        failure_log=tmp_path / "failed.tsv",
    )
    assert ds[5]["failed"] and "gone.png@" in (tmp_path / "failed.tsv").read_text()
    sampler = InfiniteShardedSampler(len(ds), seed=0)
    order = [sampler.index_at(k) for k in range(4)]
    loader = DataLoader(
        ds,
        batch_size=2,
        sampler=sampler,
        num_workers=2,
        worker_init_fn=seed_worker,
        collate_fn=lambda s: collate_multicrop(s, BatchMasker((2, 2), min_num_patches=1)),
        multiprocessing_context="fork",
    )
    it = iter(loader)
    batches = [next(it) for _ in range(2)]
    del it
    for j, batch in enumerate(batches):
        ref = collate_multicrop(
            [ds[i] for i in order[2 * j : 2 * j + 2]], BatchMasker((2, 2), min_num_patches=1)
        )
        assert torch.equal(batch["global_crops"], ref["global_crops"])
        assert torch.equal(batch["masks"], ref["masks"])


@pytest.mark.realdata
def test_real_svs_tiles(tmp_path: Path) -> None:
    from gpfm.wsi import TilingConfig, open_slide, tile_slide, write_coords
    from tests.conftest import shared_path

    svs = shared_path("wsi", "CMU-1-Small-Region.svs")
    slide = open_slide(svs)
    grid = tile_slide(slide, None, TilingConfig.from_recipe("gpfm-128um", edge_policy="exclude"))  # whole tiles
    coords = tmp_path / "cmu_patches.h5"
    write_coords(coords, grid)
    ds = SlideTileDataset([(svs, coords)], MultiCropAugmentation(local_crops_number=1), base_seed=0)
    assert len(ds) == len(grid) > 50
    i = len(ds) // 2
    x, y = grid.coords[i].tolist()
    raw = slide.read_region(x, y, grid.read_level, (grid.read_size_px, grid.read_size_px))
    expected = Image.fromarray(raw).resize((256, 256), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(ds.load(i)), np.asarray(expected))
    sample = ds[i]
    assert not sample["failed"] and sample["global_crops"][0].shape == (3, 224, 224)


def test_edge_tiles_get_the_slide_background_as_in_extraction(tmp_path: Path) -> None:
    from gpfm.wsi import TilingConfig, open_slide, tile_slide, write_coords
    from gpfm.wsi.blocks import read_tiles

    pixels = np.random.default_rng(2).integers(0, 256, (600, 520, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "slide.png")
    slide = open_slide(tmp_path / "slide.png", mpp=0.5)
    grid = tile_slide(slide, None, TilingConfig.from_recipe("gpfm-128um"))  # default: pad the edge tiles
    grid.background_rgb = (240, 230, 235)
    write_coords(tmp_path / "slide_patches.h5", grid)
    ds = SlideTileDataset([(tmp_path / "slide.png", tmp_path / "slide_patches.h5")], _aug(), base_seed=1)
    padded = int(np.flatnonzero(grid.tile_status == 1)[-1])
    tile = np.asarray(ds.load(padded))
    assert np.array_equal(tile, read_tiles(slide, grid, np.array([padded]))[0])  # same pixels as extraction
    assert (tile[-1, -1] == (240, 230, 235)).all()
