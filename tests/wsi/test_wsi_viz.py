"""Pictures: thumbnail, contours, tile grid with caption, PCA feature map; JPEG q85 atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gpfm.wsi import (
    TilingConfig,
    contours_image,
    feature_map_image,
    open_slide,
    read_tiles,
    save_jpeg,
    segment_tissue,
    thumbnail_image,
    tile_grid_image,
    tile_slide,
)
from gpfm.wsi.viz import HOLE_RGB, TISSUE_RGB, pca_colors


def test_cmu_pictures(tmp_path, cmu_path):
    s = open_slide(cmu_path)
    tissue = segment_tissue(s)
    grid = tile_slide(s, tissue, TilingConfig())
    thumb, scale = thumbnail_image(s, 512)
    assert max(thumb.shape[:2]) == 512 and scale == pytest.approx(2967 / 512)
    contours = contours_image(thumb, scale, tissue)
    assert (np.all(contours == TISSUE_RGB, axis=-1)).sum() > 100
    overlay = tile_grid_image(thumb, scale, grid, tissue)
    assert overlay.shape[0] > thumb.shape[0]  # caption bar below the picture
    out = save_jpeg(overlay, tmp_path / "viz" / "cmu.jpg")
    assert Image.open(out).format == "JPEG" and list(out.parent.iterdir()) == [out]
    feats = read_tiles(s, grid).reshape(len(grid), -1)[:, ::101].astype(np.float32)
    fmap = feature_map_image(grid.coords, feats, thumb, scale, grid.patch_size_level0)
    assert fmap.shape == thumb.shape and not np.array_equal(fmap, thumb)


def test_holes_are_drawn_blue():
    from shapely.geometry import Polygon

    thumb = np.full((100, 100, 3), 255, np.uint8)
    poly = Polygon([(10, 10), (90, 10), (90, 90), (10, 90)], [[(40, 40), (60, 40), (60, 60), (40, 60)]])
    img = contours_image(thumb, 1.0, poly, thickness=1)
    assert tuple(img[10, 50]) == TISSUE_RGB and tuple(img[40, 50]) == HOLE_RGB


def test_pca_colours_match_sklearn_and_paint_footprints():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 16))
    comps = PCA(n_components=3, random_state=0).fit_transform(feats)
    colors = pca_colors(feats)
    # Same ordering along each component as sklearn's projection (scaling is monotone per channel).
    for c in range(3):
        inner = (comps[:, c] > np.percentile(comps[:, c], 1)) & (comps[:, c] < np.percentile(comps[:, c], 99))
        order = np.argsort(comps[inner, c])
        assert np.all(np.diff(colors[inner, c][order]) >= 0)
    thumb = np.zeros((50, 50, 3), np.uint8)
    coords = np.array([[0, 0], [100, 0]])
    two = np.array([[0.0, 1.0], [1.0, 0.0]])
    img = feature_map_image(coords, two, thumb, 4.0, 100, alpha=1.0)
    assert not np.array_equal(img[5, 5], img[5, 30])  # different features, different colours
    assert np.array_equal(img[0, 0], img[24, 24]) and (img[30:, :] == 0).all()  # footprint only
