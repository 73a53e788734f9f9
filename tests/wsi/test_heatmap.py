"""Heatmaps: normalisation, blending of overlapping tiles, every score source and export on a real slide, and the
viewer page in headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gpfm.wsi.heatmap import Heatmap, colorize, make_heatmap, normalize_scores, overlay_image, rasterize
from tests.browser_pipe import CHROMIUM, wait_for_page
from tests.conftest import shared_path
from tests.faults._helpers import assert_one_line_error, gpfm_cli  # noqa: F401 - fixture

EFFNET = "efficientnet-lite0-imagenet"


def test_normalisations():
    s = np.array([3.0, -1.0, 10.0, 3.0])
    assert np.allclose(normalize_scores(s, "rank"), [0.5, 0.0, 1.0, 0.5])  # ties averaged, outlier-proof
    assert np.allclose(normalize_scores(s, "minmax"), [4 / 11, 0.0, 1.0, 4 / 11])
    assert np.allclose(normalize_scores(np.array([0.2, 1.4, -0.1]), "none"), [0.2, 1.0, 0.0])
    with pytest.raises(ValueError, match="1 tile score"):
        normalize_scores(np.array([1.0, np.nan]), "rank")


def test_overlapping_tiles_are_averaged_not_overwritten():
    coords = np.array([[0, 0], [50, 0]])  # two 100-px tiles overlapping by half
    values, coverage = rasterize(coords, np.array([0.0, 1.0]), 100, (200, 100), scale=10.0)
    assert values.shape == (10, 20) and coverage.max() == 2
    assert np.allclose(values[:, :5], 0.0) and np.allclose(values[:, 5:10], 0.5) and np.allclose(values[:, 10:15], 1)
    assert np.isnan(values[:, 15:]).all()  # no tile: transparent, not zero
    rgba = colorize(Heatmap(values, coverage, 10.0, "s", "none", (0, 1)))
    assert (rgba[:, 15:, 3] == 0).all() and (rgba[:, :15, 3] == 255).all()


def test_picture_carries_its_legend():
    hm = make_heatmap(np.array([[0, 0], [100, 100]]), np.array([1.0, 5.0]), 100, (400, 300), max_side=200,
                      label="attention", normalization="minmax")
    thumb = np.full((150, 200, 3), 240, np.uint8)
    pic = overlay_image(thumb, hm, alpha=0.6)
    assert pic.shape[1] == 200 and pic.shape[0] > 150  # legend strip underneath
    assert hm.record()["normalization"] == "minmax" and hm.record()["raw_max"] == 5.0


# ----------------------------------------------------------------------------- real slide, every source


@pytest.fixture(scope="module")
def cmu_features(tmp_path_factory) -> Path:
    """The real CMU slide extracted with EfficientNet-Lite0's real weights, 50 % tile overlap."""
    from gpfm.extract import extract_slides
    from gpfm.wsi import TilingConfig

    cmu = shared_path("wsi", "CMU-1-Small-Region.svs")
    out = tmp_path_factory.mktemp("job")
    import dataclasses

    tiling = dataclasses.replace(TilingConfig.from_recipe("gpfm-128um"), overlap=128)
    summary = extract_slides([cmu], EFFNET, out, tiling=tiling, device="cpu", precision="fp32", workers=0,
                             progress=False)
    assert summary.ok
    return next(out.rglob("features_*/*.h5"))


@pytest.mark.realdata
def test_similarity_heatmap_every_export(cmu_features, tmp_path, gpfm_cli):
    out = tmp_path / "hm"
    res = gpfm_cli("heatmap", cmu_features, "--out", out, "--query-tile", "7", "--size", "800")
    assert res.code == 0, res.err
    record = json.loads((out / "heatmap.json").read_text())
    assert record["query"].startswith("tile 7") and record["tiles_blended"] == "mean of overlapping tiles"
    pic = Image.open(out / "heatmap.png")
    assert max(pic.size) >= 700 and pic.size[1] > pic.size[0]  # the slide is portrait, legend below
    # GeoJSON: valid RFC 7946, QuPath detections with the score as a measurement, one per tile
    geojson = pytest.importorskip("geojson")
    collection = geojson.loads((out / "heatmap.geojson").read_text())
    assert collection.is_valid, collection.errors()
    with h5py.File(cmu_features) as fh:
        n = fh["coords"].shape[0]
        tile = fh["coords"].attrs["tile_size_level0_exact"]
    feats = collection["features"]
    assert len(feats) == n
    props = feats[7]["properties"]
    assert props["objectType"] == "detection" and props["measurements"]["cosine similarity"] == pytest.approx(1.0)
    ring = np.array(feats[0]["geometry"]["coordinates"][0])
    assert ring[2, 0] - ring[0, 0] == pytest.approx(tile)  # level-0 px: QuPath places it on the slide
    # pyramidal TIFF overlay at the slide's physical scale
    from gpfm.wsi import open_slide

    with open_slide(out / "heatmap.tif") as tif, open_slide(shared_path("wsi", "CMU-1-Small-Region.svs")) as wsi:
        assert tif.mpp == pytest.approx(wsi.mpp * record["scale_level0_px_per_px"], rel=0.02)
        assert abs(tif.dimensions[0] * record["scale_level0_px_per_px"] - wsi.dimensions[0]) < 3 * tile
    assert (out / "viewer" / "index.html").is_file() and any((out / "viewer" / "slide_files").iterdir())


@pytest.mark.realdata
def test_overlapping_tiles_on_the_real_slide_blend(cmu_features, tmp_path):
    from gpfm.extract.heatmaps import read_slide_features

    sf = read_slide_features(cmu_features)
    stride = np.diff(np.unique(sf.coords[:, 0]))[0]
    assert stride < sf.tile_size_level0  # the fixture really overlaps
    hm = make_heatmap(sf.coords, np.arange(len(sf.coords), dtype=float), sf.tile_size_level0, sf.slide_size,
                      max_side=600)
    covered = hm.coverage[hm.coverage > 0]
    # 50 % overlap in x and y: four tiles over most pixels (integer tile corners leave sub-pixel slivers of 6-9)
    assert np.median(covered) == 4 and (covered == 4).mean() > 0.5


@pytest.mark.realdata
def test_query_image_region_and_point(cmu_features, tmp_path, gpfm_cli):
    from gpfm.models.encoders.efficientnet import _packaged_path

    tum = shared_path("patches", "nct_crc_he_100k_samples", "TUM-AACHEHDV.tif")
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "a", "--query-image", tum, "--weights",
                   _packaged_path(0), "--formats", "png")
    assert res.code == 0, res.err
    # other weights than those that made the features: refused, named
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "b", "--query-image", tum, "--formats", "png",
                   "--weights", "random")
    assert res.code == 2
    assert_one_line_error(res, "same --weights")
    # a region drawn in QuPath: the mean feature of the tiles whose centre lies inside
    with h5py.File(cmu_features) as fh:
        x, y = (int(v) for v in fh["coords"][3])
    region = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"objectType": "annotation"},
              "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + 300, y], [x + 300, y + 300], [x, y + 300],
                                                               [x, y]]]}}]}
    (tmp_path / "region.geojson").write_text(json.dumps(region))
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "c", "--query-geojson", tmp_path / "region.geojson",
                   "--formats", "png")
    assert res.code == 0, res.err
    assert "region of region.geojson" in json.loads((tmp_path / "c" / "heatmap.json").read_text())["query"]
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "d", "--query-xy", f"{x + 130},{y + 125}",
                   "--formats", "png")
    assert res.code == 0 and "tile 3" in json.loads((tmp_path / "d" / "heatmap.json").read_text())["query"]
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "e", "--query-xy", "-5,-5", "--formats", "png")
    assert res.code == 2
    assert_one_line_error(res, "no tile covers")


@pytest.mark.realdata
def test_probe_and_h5_sources(cmu_features, tmp_path, gpfm_cli):
    from gpfm.models.encoders.efficientnet import _packaged_path

    lung = shared_path("patches", "lc25000_lung_224")
    table = pd.read_csv(lung / "labels.csv")
    picked = pd.concat([table[table["label"] == c].head(12) for c in ("lung_aca", "lung_n")])
    picked[["file", "label"]].rename(columns={"file": "path"}).to_csv(lung_csv := tmp_path / "probe.csv",
                                                                      index=False)
    for p in picked["file"]:  # the CSV's paths are relative to its folder
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lung / p, tmp_path / p)
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "p", "--source", "probe", "--probe-labels", lung_csv,
                   "--probe-class", "lung_aca", "--weights", _packaged_path(0), "--norm", "none", "--formats",
                   "png,geojson")
    assert res.code == 0, res.err
    measurements = [f["properties"]["measurements"]["P(lung_aca)"] for f in
                    json.loads((tmp_path / "p" / "heatmap.geojson").read_text())["features"]]
    assert all(0.0 <= m <= 1.0 for m in measurements) and np.std(measurements) > 0
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "q", "--source", "h5", "--scores", cmu_features,
                   "--dataset", "qc_scores:tissue_fraction", "--formats", "geojson")
    assert res.code == 0, res.err
    with h5py.File(cmu_features) as fh:
        want = fh["qc_scores"][:, 0]
    got = [f["properties"]["measurements"]["qc_scores:tissue_fraction"] for f in
           json.loads((tmp_path / "q" / "heatmap.geojson").read_text())["features"]]
    assert np.allclose(got, want)


@pytest.mark.realdata
def test_attention_of_a_case_bag_is_split_back_to_its_slide(cmu_features, tmp_path, gpfm_cli):
    """Attention files as the MIL protocols write them (the real writer), for a case of two slides."""
    from gpfm.eval.data.bags import BagDataset
    from gpfm.eval.mil.common import write_attention

    with h5py.File(cmu_features) as fh:
        coords = fh["coords"][:]
    other = np.array([[0, 0], [256, 0]])
    data = BagDataset(bags=[torch.zeros(len(coords) + 2, 4)], labels=np.array([0]), ids=["case-1"],
                      coords=[np.concatenate([other, coords])], members=[["other-slide", cmu_features.stem]],
                      member_sizes=[[2, len(coords)]])
    scores = np.concatenate([[9.0, 9.0], np.linspace(0, 1, len(coords))])
    write_attention(tmp_path / "attention.h5", data, {"case-1": scores})
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "att", "--source", "attention", "--attention",
                   tmp_path / "attention.h5", "--formats", "geojson")
    assert res.code == 0, res.err
    got = [f["properties"]["measurements"]["attention"] for f in
           json.loads((tmp_path / "att" / "heatmap.geojson").read_text())["features"]]
    assert np.allclose(got, np.linspace(0, 1, len(coords)), atol=1e-6)  # this slide's rows, not the other's
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "x", "--source", "attention", "--attention",
                   tmp_path / "attention.h5", "--slide-id", "not-in-the-run")
    assert res.code == 2
    assert_one_line_error(res, "no attention for slide 'not-in-the-run'")


@pytest.mark.realdata
def test_a_saved_mil_model_draws_attention_on_any_slide(cmu_features, tmp_path, gpfm_cli):
    from gpfm.eval.mil import create_aggregator
    from gpfm.eval.mil.common import apply_model, save_model
    from gpfm.extract.heatmaps import read_slide_features

    torch.manual_seed(0)
    model = create_aggregator("abmil", in_dim=1280, n_outputs=2)
    save_model(tmp_path, "fold0", model, "abmil", {}, 1280, 2, ["benign", "tumour"], EFFNET, "classification")
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "m", "--source", "attention", "--model",
                   tmp_path / "model_fold0.pt", "--formats", "geojson")
    assert res.code == 0, res.err
    record = json.loads((tmp_path / "m" / "heatmap.json").read_text())
    assert set(record["prediction"]) == {"benign", "tumour"} and abs(sum(record["prediction"].values()) - 1) < 1e-3
    want, _ = apply_model(model.eval(), read_slide_features(cmu_features).features)
    got = [f["properties"]["measurements"]["attention"] for f in
           json.loads((tmp_path / "m" / "heatmap.geojson").read_text())["features"]]
    assert np.allclose(got, want, atol=1e-6)
    save_model(tmp_path, "other", model, "abmil", {}, 1280, 2, ["a", "b"], "uni", "classification")
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "n", "--source", "attention", "--model",
                   tmp_path / "model_other.pt")
    assert res.code == 2
    assert_one_line_error(res, "trained on uni features")


# ----------------------------------------------------------------------------- the viewer in Chromium


def _check(url: str, profile: Path, screenshot: Path | None = None) -> tuple[dict, list[str]]:
    """The page's self-check and console once a tile was drawn (or an error was caught) and the count stopped
    changing, waited for in real time: a virtual-time budget dumped the page before its first tile in about a
    third of the runs."""
    def drawn_or_failed(value) -> bool:
        check = json.loads(value) if value else {}
        return check.get("drawn", 0) > 0 or bool(check.get("errors"))

    value, console = wait_for_page(CHROMIUM, url, profile, "document.body.dataset.viewerCheck", drawn_or_failed,
                                   timeout=60, settle=1.0, screenshot=screenshot)
    return (json.loads(value) if value else {"ok": False}), console


def _heat_pixels(png: Path) -> int:
    """Pixels of the slide area whose colour only the jet overlay makes (saturated blue / cyan / yellow)."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)[60:850, :1050]
    blue = (rgb[..., 2] > 150) & (rgb[..., 0] < 100) & (rgb[..., 1] < 150)
    yellow = (rgb[..., 0] > 180) & (rgb[..., 1] > 180) & (rgb[..., 2] < 90)
    return int((blue | yellow).sum())


@pytest.mark.realdata
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package 'chromium')")
def test_viewer_opens_offline_and_the_layer_toggles(cmu_features, tmp_path, gpfm_cli):
    out = tmp_path / "hm"
    assert gpfm_cli("heatmap", cmu_features, "--out", out, "--query-tile", "7", "--formats", "viewer").code == 0
    page = (out / "viewer" / "index.html").resolve()
    shots = {"on": tmp_path / "on.png", "off": tmp_path / "off.png"}
    check, console = _check(page.as_uri(), tmp_path / "p1", shots["on"])
    assert check["ok"] and check["items"] == 2 and check["drawn"] > 0 and check["errors"] == [], check
    assert check["overlayOpacity"] == pytest.approx(0.5) and check["tiles"] > 50
    assert not [c for c in console if "rror" in c], console
    off, _ = _check(page.as_uri() + "#overlay=off", tmp_path / "p2", shots["off"])
    assert off["ok"] and off["overlayOpacity"] == 0 and off["drawn"] > 0
    on, off_px = _heat_pixels(shots["on"]), _heat_pixels(shots["off"])
    assert on > 20 * max(off_px, 100), (on, off_px)  # the overlay is drawn, and hidden when toggled off
    tissue = np.asarray(Image.open(shots["off"]).convert("RGB"), dtype=np.int32)[60:850, :1050]
    pink = (tissue[..., 0] > 150) & (tissue[..., 1] < 140) & (tissue[..., 2] > 120)  # eosin-stained tissue
    assert pink.sum() > 5000


@pytest.mark.realdata
def test_careless_outputs_are_refused_and_nothing_of_the_user_is_replaced(cmu_features, tmp_path, gpfm_cli):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    res = gpfm_cli("heatmap", cmu_features, "--out", afile, "--query-tile", "1", "--formats", "png")
    assert res.code == 2 and afile.read_text() == "mine"
    assert_one_line_error(res, str(afile), "is a file")
    theirs = tmp_path / "out" / "viewer"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("keep")
    res = gpfm_cli("heatmap", cmu_features, "--out", tmp_path / "out", "--query-tile", "1", "--formats", "viewer")
    assert res.code == 2 and (theirs / "notes.txt").read_text() == "keep"
    assert_one_line_error(res, "is not a gpfm viewer")
    assert not (tmp_path / "out" / "viewer.partial").exists()
