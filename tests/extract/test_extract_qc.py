"""Artefacts in extraction: pen ink removed from the tissue, ink tiles excluded and listed, QC overlay, presets."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest
from run_extract import run as run_tiny

from gpfm.extract import extract_slides
from gpfm.wsi import open_slide, read_features
from gpfm.wsi.pyramid import write_pyramidal_tiff
from gpfm.wsi.qc import PEN, REASONS

pytestmark = pytest.mark.realdata
FEATURES = "20x_256px_0px_overlap/features_test-tiny"


@pytest.fixture(scope="module")
def inked_slide(tmp_path_factory, cmu):
    """CMU-1-Small-Region with a thick blue marker stroke over tissue, as a pyramidal TIFF (mpp in its tags)."""
    rgb = open_slide(cmu).read_scaled(1.0).copy()
    ink = np.zeros(rgb.shape[:2], np.uint8)
    cv2.line(ink, (700, 1500), (1400, 2300), 1, thickness=520)  # ~2 tiles wide
    stroke = ink.astype(bool)
    rgb[stroke] = (0.25 * rgb[stroke] + 0.75 * np.array([30, 70, 200])).astype(np.uint8)
    path = tmp_path_factory.mktemp("inked") / "inked.tif"
    write_pyramidal_tiff(path, rgb, 0.499)
    return path


def _extract(slide, out, qc):
    return extract_slides([slide], "test-tiny", out, weights="random", device="cpu", precision="fp32",
                          batch_size=8, workers=0, progress=False, qc=qc)


def test_ink_tiles_are_excluded_listed_and_drawn(tmp_path, inked_slide, tiny_encoder):
    summary = _extract(inked_slide, tmp_path / "job", "standard")
    state = summary.slides[0]
    assert state.status == "done" and state.n_excluded_tiles > 0
    data = read_features(tmp_path / "job" / FEATURES / "inked.h5")
    n, m = data["features"].shape[0], data["excluded_coords"].shape[0]
    assert n == state.n_tiles and m == state.n_excluded_tiles
    assert (data["excluded_reason"] == PEN).all() and (data["excluded_qc_scores"][:, 1] >= 0.2).all()
    assert not {tuple(c) for c in data["coords"].tolist()} & {tuple(c) for c in data["excluded_coords"].tolist()}
    assert data["qc_scores"].shape == (n, 4) and (data["qc_reason"] != PEN).all()
    assert json.loads(data["attrs"]["qc_json"])["exclude"] == ["pen", "black"]
    assert data["attrs"]["n_excluded_tiles"] == m and data["coords_attrs"]["n_tiles"] == n
    assert (tmp_path / "job" / "20x_256px_0px_overlap" / "qc" / "inked.jpg").is_file()
    # pen removal: the ink stroke is cut out of the tissue mask, so QC off tiles fewer, not more, ink tiles
    off = _extract(inked_slide, tmp_path / "job_off", "off").slides[0]
    off_data = read_features(tmp_path / "job_off" / FEATURES / "inked.h5")
    assert "excluded_coords" not in off_data and off_data["attrs"]["qc_preset"] == "off"
    assert off.n_tiles >= n and off.n_excluded_tiles == 0
    print(f"inked CMU: standard kept {n}, excluded {m} ink tiles; off kept {off.n_tiles}")


def test_changing_the_qc_preset_redoes_features_not_coordinates(tmp_path, cmu, tiny_encoder):
    out = tmp_path / "job"
    first = _extract(cmu, out, "standard").slides[0]
    patches = out / "20x_256px_0px_overlap" / "patches" / "CMU-1-Small-Region_patches.h5"
    stamp = patches.stat().st_mtime_ns
    again = _extract(cmu, out, "standard")
    assert again.counts == {"skipped": 1}
    strict = _extract(cmu, out, "strict").slides[0]
    assert strict.status == "done" and strict.run_id != first.run_id and patches.stat().st_mtime_ns == stamp
    with h5py.File(out / FEATURES / "CMU-1-Small-Region.h5") as fh:
        reasons = [REASONS[r] for r in fh["excluded_reason"][:]]
        assert fh["features"].attrs["qc_preset"] == "strict"
    assert strict.n_tiles + strict.n_excluded_tiles == first.n_tiles + first.n_excluded_tiles
    assert set(reasons) <= {"background", "blur", "pen", "black"} and strict.n_excluded_tiles == len(reasons)


def test_edge_tiles_carry_valid_fraction_and_background(tmp_path, cmu, tiny_encoder):
    run_tiny(tmp_path / "job", [str(cmu)])
    data = read_features(tmp_path / "job" / FEATURES / "CMU-1-Small-Region.h5")
    padded = data["tile_status"] == 1
    assert padded.any() and (data["valid_fraction"][padded] < 1).all() and (data["valid_fraction"][~padded] == 1).all()
    bottom = data["coords"][:, 1].max() + data["coords_attrs"]["patch_size_level0"]
    assert bottom > data["coords_attrs"]["level0_height"]  # the last partial row is tiled
    assert tuple(data["coords_attrs"]["background_rgb"]) != (255, 255, 255)


def test_a_learned_segmenter_runs_through_extract(tmp_path, cmu, tiny_encoder, gpfm_weights_offline):
    summary = extract_slides([cmu], "test-tiny", tmp_path / "job", weights="random", device="cpu",
                             precision="fp32", batch_size=8, workers=0, progress=False,
                             seg_method="deeplabv3-mobilenet", seg_params={"weights": "random"})
    state = summary.slides[0]
    assert state.status in ("done", "empty"), state.error
    recorded = json.loads((tmp_path / "job" / "20x_256px_0px_overlap" / "tiling_config.json").read_text())
    assert recorded["config"]["segmentation"]["params"]["model"] == "deeplabv3-mobilenet"
    assert recorded["config"]["segmentation"]["params"]["weights_sha256"] == "random"


@pytest.fixture
def gpfm_weights_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_learned_segmenter_without_weights_is_one_clear_cli_error(tmp_path, cmu, tiny_encoder, gpfm_weights_offline):
    from typer.testing import CliRunner

    from gpfm.cli import app

    result = CliRunner().invoke(app, ["extract", str(cmu), "--encoder", tiny_encoder, "--weights", "random", "--out",
                                      str(tmp_path / "job"), "--seg-method", "deeplabv3-hest"])
    assert result.exit_code == 2 and "tissue segmenter 'deeplabv3-hest'" in result.output
    assert "--seg-weights" in result.output
