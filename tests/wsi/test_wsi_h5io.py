"""HDF5 coordinate/feature files: layout, attributes, atomicity and the completion test."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from gpfm.wsi import (
    TilingConfig,
    is_complete,
    load_tile_grid,
    open_slide,
    read_coords,
    read_features,
    read_tiling,
    tile_slide,
    write_coords,
    write_features,
)


@pytest.fixture()
def grid(synthetic_pyramid):
    path, _ = synthetic_pyramid
    return tile_slide(open_slide(path), None, TilingConfig(recipe="custom", target_mpp=0.5, tile_px=64))


def test_coords_roundtrip_layout_and_grid_reload(tmp_path, grid):
    out = write_coords(tmp_path / "patches" / "s_patches.h5", grid, {"savetodir": "job"})
    coords, attrs = read_coords(out)
    np.testing.assert_array_equal(coords, grid.coords)
    assert attrs["savetodir"] == "job" and attrs["complete"] is True
    assert attrs["tiling_config_sha256"] == grid.tiling_config_sha256
    with h5py.File(out, "r") as h5:
        assert h5["coords"].dtype == np.int64 and h5["coords"].maxshape == (None, 2)
        assert h5["coords"].chunks[0] == min(4096, len(grid))
        assert h5["tissue_fraction"].dtype == np.float32 and h5["grid_rc"].dtype == np.int32
    again = load_tile_grid(out)
    np.testing.assert_array_equal(again.coords, grid.coords)
    assert (again.read_level, again.read_size_px, again.config) == (
        grid.read_level,
        grid.read_size_px,
        grid.config,
    )
    assert again.tiling_config_sha256 == grid.tiling_config_sha256
    assert is_complete(out, grid.tiling_config_sha256)
    assert not is_complete(out, "0" * 64)
    assert list(tmp_path.joinpath("patches").iterdir()) == [out]  # no temp file left behind


def test_empty_grid_is_valid(tmp_path, grid):
    empty = grid.select(np.zeros(len(grid), bool))
    out = write_coords(tmp_path / "e.h5", empty)
    coords, attrs = read_coords(out)
    assert coords.shape == (0, 2) and attrs["n_tiles"] == 0
    assert is_complete(out)
    assert read_tiling(out)["tissue_fraction"].shape == (0,)


def test_features_file_and_completion_rules(tmp_path, grid):
    n = len(grid)
    feats = np.random.default_rng(0).normal(size=(n, 24)).astype(np.float64)
    status = np.zeros(n, np.uint8)
    status[3] = 2
    fattrs = {
        "name": grid.slide_id,
        "encoder": "tiny",
        "weights_sha256": "w1",
        "tiling_config_sha256": grid.tiling_config_sha256,
        "transform_json": {"size": 224},
    }
    out = write_features(
        tmp_path / "f" / "s.h5",
        feats,
        grid.coords,
        grid.attrs(),
        fattrs,
        tile_status=status,
        extra_datasets={"patch_tokens": np.zeros((n, 2, 3), np.float32)},
    )
    data = read_features(out)
    assert data["features"].dtype == np.float32
    np.testing.assert_allclose(data["features"], feats.astype(np.float32))
    np.testing.assert_array_equal(data["coords"], grid.coords)
    assert data["attrs"]["dim"] == 24 and data["attrs"]["n_failed_tiles"] == 1
    assert data["attrs"]["transform_json"] == '{"size": 224}'
    assert data["coords_attrs"]["read_size_px"] == grid.read_size_px
    assert data["patch_tokens"].shape == (n, 2, 3) and data["tile_status"][3] == 2
    with h5py.File(out, "r") as h5:
        assert h5["features"].chunks == (min(1024, n), 24)
    assert is_complete(out, grid.tiling_config_sha256, "w1")
    assert not is_complete(out, grid.tiling_config_sha256, "w2")
    assert not is_complete(tmp_path / "missing.h5")

    truncated = tmp_path / "t.h5"
    data_bytes = out.read_bytes()
    truncated.write_bytes(data_bytes[: len(data_bytes) // 2])
    assert not is_complete(truncated)

    unfinished = tmp_path / "u.h5"
    shutil.copy(out, unfinished)
    with h5py.File(unfinished, "r+") as h5:
        del h5["features"].attrs["complete"]
    assert not is_complete(unfinished)

    with pytest.raises(ValueError, match="feature rows"):
        write_features(tmp_path / "bad.h5", feats[:-1], grid.coords, {}, {})
    assert not (tmp_path / "bad.h5").exists()


@pytest.mark.parametrize("n", [1, 54, 1024, 1025, 2201, 3040, 10_000])
def test_chunks_pad_less_than_one_row_per_chunk(n):
    from gpfm.wsi.h5io import FEATURES_CHUNK_ROWS, chunk_rows

    rows = chunk_rows(n, FEATURES_CHUNK_ROWS)
    n_chunks = -(-n // rows)
    assert rows <= FEATURES_CHUNK_ROWS and n_chunks * rows - n < n_chunks


def test_a_2201_row_features_file_is_not_padded_to_3072_rows(tmp_path):
    from gpfm.wsi.h5io import write_features

    n, d = 2201, 1280
    path = write_features(tmp_path / "f.h5", np.zeros((n, d), np.float32), np.zeros((n, 2)), {}, {})
    payload = n * d * 4 + n * 2 * 8
    assert path.stat().st_size < 1.02 * payload  # with 1,024-row chunks it was 1.40×
