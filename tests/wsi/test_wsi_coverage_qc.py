"""All the tissue (edge tiles kept, padded with the slide background) and tile QC on labelled real tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gpfm.wsi import TilingConfig, open_slide, segment_tissue, tile_slide
from gpfm.wsi.coverage import tissue_coverage
from gpfm.wsi.qc import PEN, QC_PRESETS, REASONS, excluded_mask, qc_preset, qc_tiles

REAL_SLIDES = [("cmu_path", None), ("tcga_path", 0.25), ("pathml_dicom_path", 0.5)]


@pytest.mark.parametrize("fixture,mpp", REAL_SLIDES)
def test_default_tiling_covers_99_percent_of_the_tissue_of_every_real_slide(request, fixture, mpp):
    slide = open_slide(request.getfixturevalue(fixture), mpp=mpp)
    tissue = segment_tissue(slide)
    default = tile_slide(slide, tissue, TilingConfig())
    old = tile_slide(slide, tissue, TilingConfig(edge_policy="exclude", min_tissue_fraction=0.25))
    covered, before = tissue_coverage(default, tissue), tissue_coverage(old, tissue)
    print(f"{slide.path.name}: coverage {before:.4f} (exclude, 0.25) -> {covered:.4f} (default)")
    assert covered >= 0.99 > before
    kept_before = {tuple(c) for c in old.coords.tolist()}
    assert kept_before <= {tuple(c) for c in default.coords.tolist()}  # no tile the old rule kept is lost


def test_coverage_is_exact_on_a_known_geometry(synthetic_pyramid):
    import shapely

    path, _ = synthetic_pyramid
    slide = open_slide(path)  # 1200 × 1000 at 0.25 µm/px
    from gpfm.wsi.tissue import TissueMask, rasterize

    geometry = shapely.box(0, 0, 1200, 1000)
    mask = rasterize(geometry, (125, 150), 8.0)
    tissue = TissueMask(geometry, mask, 8.0, 0.25, "geometry")
    cfg = dict(recipe="custom", target_mpp=0.5, tile_px=96)  # 192 px: 6.25 columns, 5.2 rows
    exclude = tile_slide(slide, tissue, TilingConfig(**cfg, edge_policy="exclude"))
    pad = tile_slide(slide, tissue, TilingConfig(**cfg))
    assert tissue_coverage(exclude, tissue) == pytest.approx((6 * 192) * (5 * 192) / (1200 * 1000), abs=0.01)
    assert tissue_coverage(pad, tissue) == 1.0
    vf = pad.valid_fraction.reshape(6, 7)
    assert vf[0, :6].tolist() == [1.0] * 6 and vf[0, 6] == pytest.approx((1200 - 6 * 192) / 192)
    assert vf[5, 0] == pytest.approx((1000 - 5 * 192) / 192)


def _histolab_truth(path) -> str:
    name = path.name
    if "pen" in name:
        return "pen"
    return "background" if name.startswith(("no-tissue", "almost-white")) else "tissue"


def test_standard_qc_on_labelled_real_tiles(histolab_tiles_dir):
    paths = sorted(histolab_tiles_dir.glob("*.png"))
    tiles = np.stack([np.asarray(Image.open(p).convert("RGB").resize((257, 257))) for p in paths])
    params = qc_preset("standard")
    scores, reasons = qc_tiles(tiles, params)
    excluded = excluded_mask(reasons, params)
    truth = [_histolab_truth(p) for p in paths]
    confusion = {(t, REASONS[r], bool(x)) for t, r, x in zip(truth, reasons, excluded, strict=True)}
    print(sorted(confusion))
    assert not any(x for t, x in zip(truth, excluded, strict=True) if t == "tissue")  # no tissue tile lost
    assert all(x and r == PEN for t, r, x in zip(truth, reasons, excluded, strict=True) if t == "pen")
    assert all(REASONS[r] in ("background", "pen") for t, r in zip(truth, reasons, strict=True)
               if t == "background")  # flagged (kept by standard, excluded by strict)
    strict = qc_preset("strict")
    assert excluded_mask(reasons, strict)[[t == "background" for t in truth]].all()
    assert scores.shape == (len(paths), 4) and np.isfinite(scores).all()


def test_qc_flags_blur_black_and_knows_its_presets(cmu_path):
    import cv2

    from gpfm.wsi.blocks import read_tiles

    slide = open_slide(cmu_path)
    grid = tile_slide(slide, segment_tissue(slide), TilingConfig())
    tiles = read_tiles(slide, grid)
    strict = qc_preset("strict")
    sharp_scores, _ = qc_tiles(tiles, strict)
    blurred = np.stack([cv2.GaussianBlur(t, (0, 0), 4.0) for t in tiles])  # 2 µm at 0.5 µm/px
    _, blur_reasons = qc_tiles(blurred, strict)
    tissue_rows = sharp_scores[:, 0] >= strict.min_tissue_fraction
    assert (sharp_scores[tissue_rows, 3] >= strict.min_sharpness).all()
    assert (np.asarray(REASONS)[blur_reasons[tissue_rows]] == "blur").all()
    black = np.zeros((2, 257, 257, 3), np.uint8)
    assert [REASONS[r] for r in qc_tiles(black, strict)[1]] == ["black", "black"]
    assert QC_PRESETS["off"] is None
    with pytest.raises(ValueError, match="unknown QC preset"):
        qc_preset("paranoid")
