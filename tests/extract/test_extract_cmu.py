"""End to end on the real CMU-1-Small-Region slide: layout, shapes, attributes, geometry, re-read parity, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gpfm.extract import extract_slides
from gpfm.extract.embed import encode_uint8
from gpfm.extract.layout import JobLayout, TilingConfigMismatchError
from gpfm.models import create_encoder
from gpfm.wsi import is_complete, load_tile_grid, open_slide, read_coords, read_features
from gpfm.wsi.blocks import read_tiles

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def cmu_job(tmp_path_factory, cmu, tiny_encoder):
    out = tmp_path_factory.mktemp("job")
    summary = extract_slides([cmu], tiny_encoder, out, weights="random", device="cpu", precision="fp32",
                             batch_size=16, workers=0, progress=False)
    return out, summary, JobLayout(out, "20x_256px_0px_overlap", tiny_encoder)


def test_outputs_and_attributes(cmu_job, tiny_encoder):
    out, summary, layout = cmu_job
    assert summary.counts == {"done": 1} and summary.ok
    sid = "CMU-1-Small-Region"
    for path in (layout.thumbnail(sid), layout.contours(sid), layout.contours_geojson(sid), layout.patches(sid),
                 layout.visualization(sid), layout.features(sid), layout.tiling_config_json, layout.summary_csv,
                 summary.record_path, layout.state_dir / f"{sid}.json"):
        assert path.is_file(), path
    data = read_features(layout.features(sid))
    n = data["features"].shape[0]
    assert data["features"].shape == (n, 32) and data["features"].dtype == np.float32 and n > 20
    assert np.isfinite(data["features"]).all()
    a = data["attrs"]
    assert a["encoder"] == tiny_encoder and a["weights_sha256"] == "random" and a["precision"] == "fp32"
    assert a["complete"] and a["dim"] == 32 and a["name"] == sid and a["n_failed_tiles"] == 0
    assert json.loads(a["transform_json"])["input_size"] == 64
    assert json.loads(a["transform_json"])["antialias"] is True
    assert a["gpfm_version"] and a["tiling_recipe"] == "gpfm-128um"
    coords, coords_attrs = read_coords(layout.patches(sid))
    assert np.array_equal(coords, data["coords"])  # the features file carries an exact copy
    assert a["tiling_config_sha256"] == coords_attrs["tiling_config_sha256"] == data["coords_attrs"]["tiling_config_sha256"]
    recorded = json.loads(layout.tiling_config_json.read_text())
    assert recorded["sha256"] == a["tiling_config_sha256"]
    assert is_complete(layout.features(sid), a["tiling_config_sha256"], "random")
    state = json.loads((layout.state_dir / f"{sid}.json").read_text())
    assert state["status"] == "done" and state["n_tiles"] == n and state["mpp_source"] == "openslide"
    run = json.loads(summary.record_path.read_text())
    assert run["counts"] == {"done": 1} and run["n_tiles"] == n and "cpu_capability" in run["machine"]


def test_geometry_matches_the_slide_mpp(cmu_job):
    """0.499 µm/px: a 128 µm tile is 256.51 → 257 level-0 px; tile k starts at round(k · 256.51)."""
    _, _, layout = cmu_job
    coords, attrs = read_coords(layout.patches("CMU-1-Small-Region"))
    mpp = attrs["mpp_level0_x"]
    assert abs(mpp - 0.499) < 1e-6
    assert attrs["patch_size_level0"] == round(128 / mpp) == 257
    assert attrs["read_level"] == 0 and attrs["read_size_px"] == 257
    stride = 256 * 0.5 / mpp
    for axis in (0, 1):
        k = np.round(coords[:, axis] / stride)
        assert np.array_equal(np.round(k * stride).astype(np.int64), coords[:, axis])
    assert (coords[:, 0] < 2220).all() and (coords[:, 1] < 2967).all()  # every tile starts on the slide
    past = (coords[:, 0] + 257 > 2220) | (coords[:, 1] + 257 > 2967)  # the edge row/column: kept, padded
    data = read_features(layout.features("CMU-1-Small-Region"))
    assert past.any() and np.array_equal(data["tile_status"] == 1, past)
    assert (data["valid_fraction"][past] < 1).all() and (data["valid_fraction"][~past] == 1).all()


def test_stored_coordinate_rereads_the_embedded_pixels(cmu_job, cmu, tiny_encoder):
    """Read tile i at its stored coordinate through the reader, embed it alone: same feature as stored."""
    _, _, layout = cmu_job
    data = read_features(layout.features("CMU-1-Small-Region"))
    attrs = data["coords_attrs"]
    encoder = create_encoder(tiny_encoder, "random", device="cpu", precision="fp32")
    slide = open_slide(cmu)
    size = int(attrs["read_size_px"])
    grid = load_tile_grid(layout.features("CMU-1-Small-Region"))
    padded = int(np.flatnonzero(data["tile_status"] == 1)[0])
    for i in (0, len(data["coords"]) // 2, len(data["coords"]) - 1, padded):
        x, y = data["coords"][i].tolist()
        tile = read_tiles(slide, grid, np.array([i]))[0]  # read_region, background past the slide edge
        if data["tile_status"][i] == 0:  # a whole tile: exactly the plain region read
            np.testing.assert_array_equal(tile, slide.read_region(x, y, int(attrs["read_level"]), (size, size)))
        again = encode_uint8(encoder, torch.from_numpy(tile)[None]).numpy()[0]
        np.testing.assert_allclose(again, data["features"][i], rtol=1e-5, atol=1e-5)
        # and a neighbouring tile's pixels give a different feature (the check can fail)
        other = slide.read_region(x + 128, y, int(attrs["read_level"]), (size, size))
        assert not np.allclose(encode_uint8(encoder, torch.from_numpy(other)[None]).numpy()[0], data["features"][i])


def test_rerun_skips_and_overwrite_redoes(cmu_job, cmu, tiny_encoder):
    out, _, layout = cmu_job
    path = layout.features("CMU-1-Small-Region")
    before = path.stat().st_mtime_ns
    again = extract_slides([cmu], tiny_encoder, out, weights="random", device="cpu", precision="fp32",
                           workers=0, progress=False)
    assert again.counts == {"skipped": 1} and path.stat().st_mtime_ns == before
    redo = extract_slides([cmu], tiny_encoder, out, weights="random", device="cpu", precision="fp32",
                          workers=0, progress=False, overwrite=True)
    assert redo.counts == {"done": 1} and path.stat().st_mtime_ns != before


def test_changed_segmentation_is_refused(cmu_job, cmu, tiny_encoder):
    out, _, _ = cmu_job
    with pytest.raises(TilingConfigMismatchError, match="--force"):
        extract_slides([cmu], tiny_encoder, out, weights="random", device="cpu", seg_params={"median_px": 9},
                       workers=0, progress=False)
