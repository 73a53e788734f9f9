"""Fixtures for the slide-side tests: real slides from ../shared/data/wsi and small synthetic pyramids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path

SYNTH_MPP = 0.25
REAL_DATA_FIXTURES = {"cmu_path", "tcga_path", "pathml_dicom_path", "fixtures_dir", "histolab_tiles_dir"}


def pytest_collection_modifyitems(config, items):
    """Mark every test in this folder that uses a real-data fixture as ``realdata``."""
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())) and "tests/wsi" in str(item.fspath):
            item.add_marker(pytest.mark.realdata)


@pytest.fixture(scope="session")
def cmu_path() -> Path:
    return shared_path("wsi", "CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def tcga_path() -> Path:
    return shared_path("wsi", "TCGA-CR-7395-01A-01-TS1.svs")


@pytest.fixture(scope="session")
def pathml_dicom_path() -> Path:
    return shared_path("wsi", "TCGA-XK-AAJU-01A-01-TS1_pathml_small_dicom.dcm")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return shared_path("wsi", "openslide-python-fixtures")


@pytest.fixture(scope="session")
def histolab_tiles_dir() -> Path:
    return shared_path("tiles", "histolab_fixture_tiles")


@pytest.fixture(scope="session")
def synthetic_pyramid(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A 3-level tiled TIFF (1200×1000 at 0.25 µm/px, downsamples 2 and 4) with random pixels, and its levels.

    Written as consecutive IFDs, which both OpenSlide (generic-tiff) and tiffslide read; lossless (zlib), so
    every level's expected pixels are the arrays returned.
    """
    import tifffile

    rng = np.random.default_rng(0)
    level0 = rng.integers(0, 256, (1000, 1200, 3), dtype=np.uint8)
    levels = [level0, np.ascontiguousarray(level0[::2, ::2]), np.ascontiguousarray(level0[::4, ::4])]
    path = tmp_path_factory.mktemp("pyramid") / "synthetic.tif"
    res = 1e4 / SYNTH_MPP
    with tifffile.TiffWriter(path) as tw:
        for i, level in enumerate(levels):
            tw.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                compression="zlib",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
            )
    return path, levels


@pytest.fixture(scope="session")
def synthetic_tissue_png(tmp_path_factory) -> Path:
    """White 2000×1600 PNG: a pink disk (r 600 px) with a white hole (r 150 px), and a blob (r 60 px)."""
    import cv2
    from PIL import Image

    img = np.full((1600, 2000, 3), 245, np.uint8)
    cv2.circle(img, (900, 800), 600, (200, 110, 170), -1)
    cv2.circle(img, (900, 800), 150, (245, 245, 245), -1)
    cv2.circle(img, (1800, 250), 60, (150, 60, 140), -1)
    path = tmp_path_factory.mktemp("synth") / "disk.png"
    Image.fromarray(img).save(path)
    return path
