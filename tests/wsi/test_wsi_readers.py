"""Slide readers on real files: mpp discovery and errors, exact pixels, white compositing, DICOM, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from gpfm.wsi import TILE_FAILED, TILE_OK, MissingMppError, UnsupportedSlideError, open_slide
from gpfm.wsi.mpp import candidates_from_properties, resolve_mpp, tiff_resolution_mpp
from gpfm.wsi.readers import composite_on_white


def test_cmu_metadata_openslide_and_tiffslide(cmu_path):
    with open_slide(cmu_path) as s:
        assert s.backend == "openslide"
        assert s.level_dimensions == ((2220, 2967),)
        assert s.mpp == pytest.approx(0.499) and s.mpp_source == "openslide"
        assert s.slide_id == "CMU-1-Small-Region"
        a = s.read_region(600, 900, 0, (300, 200))
    with open_slide(cmu_path, backend="tiffslide") as t:
        assert t.mpp == pytest.approx(0.499) and t.mpp_source == "vendor:aperio.MPP"
        b = t.read_region(600, 900, 0, (300, 200))
    assert a.shape == (200, 300, 3) and a.dtype == np.uint8
    # Two libraries, same JPEG tiles: the decoded pixels agree to within rounding.
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0


def test_tcga_missing_mpp_is_a_clear_error(tcga_path):
    with pytest.raises(MissingMppError) as err:
        open_slide(tcga_path)
    message = str(err.value)
    assert "TCGA-CR-7395-01A-01-TS1.svs" in message and "--mpp" in message and "mpp" in message
    assert "\n" not in message


def test_tcga_with_mpp_levels_and_level_choice(tcga_path):
    s = open_slide(tcga_path, mpp=0.25)
    assert s.mpp_source == "cli_override"
    assert s.level_dimensions == ((4443, 3567), (2221, 1783))
    # The non-integer downsample is kept as reported (4443/2221 and 3567/1783 averaged), not rounded to 2.
    assert s.level_downsamples[1] == pytest.approx((4443 / 2221 + 3567 / 1783) / 2)
    assert s.mpp_at_level(1) == pytest.approx(0.25 * s.level_downsamples[1])
    assert s.best_level_for_mpp(0.5) == 1  # 0.5001 ≤ 0.525
    assert s.best_level_for_mpp(0.45) == 0
    assert open_slide(tcga_path, mpp=0.25, mpp_source="manifest").mpp_source == "manifest"
    with pytest.raises(MissingMppError, match="outside"):
        open_slide(tcga_path, mpp=350.0)


def test_boxes_tiff_rejects_72dpi_style_mpp_and_matches_png(fixtures_dir):
    with pytest.raises(MissingMppError, match="openslide=352.778"):
        open_slide(fixtures_dir / "boxes.tiff")
    expected = np.asarray(Image.open(fixtures_dir / "boxes.png").convert("RGB"))
    for backend in ("openslide", "tiffslide"):
        s = open_slide(fixtures_dir / "boxes.tiff", mpp=1.0, backend=backend)
        assert s.level_count == 4
        assert s.level_downsamples[2] == pytest.approx(300 / 75 * 0.5 + 250 / 62 * 0.5)
        np.testing.assert_array_equal(s.read_region(0, 0, 0, (300, 250)), expected)
        np.testing.assert_array_equal(s.read_region(37, 91, 0, (64, 50)), expected[91:141, 37:101])


def test_level_reads_snap_to_floor_of_level_pixel(fixtures_dir):
    import tifffile

    with tifffile.TiffFile(fixtures_dir / "boxes.tiff") as tf:
        level2 = tf.series[0].levels[2].asarray()
    s = open_slide(fixtures_dir / "boxes.tiff", mpp=1.0, backend="tiffslide")
    ds = s.level_downsamples[2]  # 4.0161...
    for x0, y0 in [(0, 0), (41, 17), (100, 99), (161, 120)]:
        lx, ly = int(np.floor(x0 / ds)), int(np.floor(y0 / ds))
        got = s.read_region(x0, y0, 2, (20, 15))
        np.testing.assert_array_equal(got, level2[ly : ly + 15, lx : lx + 20])


def test_out_of_bounds_is_white(cmu_path, fixtures_dir):
    for path, kw in ((cmu_path, {}), (fixtures_dir / "boxes.tiff", {"mpp": 1.0})):
        for backend in ("openslide", "tiffslide"):
            s = open_slide(path, backend=backend, **kw)
            w, h = s.dimensions
            region = s.read_region(w - 10, h - 5, 0, (40, 30))
            assert (region[5:, :] == 255).all() and (region[:, 10:] == 255).all()


def test_transparent_pixels_composite_onto_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, :, 3] = 0  # fully transparent row → white
    rgba[1, :, 3] = 128  # half: 10·128/255 + 255·127/255 = 132.04 → 132
    rgba[2:, :, 3] = 255
    out = composite_on_white(rgba)
    assert (out[0] == 255).all()
    assert tuple(out[1, 0]) == (
        round(10 * 128 / 255 + 255 * 127 / 255),
        round(20 * 128 / 255 + 255 * 127 / 255),
        round(30 * 128 / 255 + 255 * 127 / 255),
    )
    assert tuple(out[2, 0]) == (10, 20, 30)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    with pytest.raises(MissingMppError):
        open_slide(path)  # plain images need an explicit mpp
    s = open_slide(path, mpp=0.5)
    assert s.backend == "image"
    np.testing.assert_array_equal(s.read_region(0, 0, 0, (4, 4)), out)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the reference decode of a minimal file
def test_dicom_pathml_single_instance(pathml_dicom_path):
    import pydicom

    # Its ImagedVolume is a 15×15 mm placeholder for a non-square image: not a measurement → missing mpp.
    with pytest.raises(MissingMppError):
        open_slide(pathml_dicom_path)
    s = open_slide(pathml_dicom_path, mpp=0.5)
    assert s.backend == "dicom" and s.dimensions == (3236, 2638)
    frames = pydicom.dcmread(pathml_dicom_path).pixel_array  # independent decode (42, 500, 500, 3)
    np.testing.assert_array_equal(s.read_region(500, 500, 0, (500, 500)), frames[8])  # row 1, col 1 of 7
    region = s.read_region(450, 950, 0, (100, 100))  # straddles four frames
    np.testing.assert_array_equal(region[:50, :50], frames[7][450:, 450:])
    np.testing.assert_array_equal(region[50:, 50:], frames[15][:50, :50])
    edge = s.read_region(3200, 2600, 0, (100, 100))
    assert (edge[38:] == 255).all() and (edge[:, 36:] == 255).all()


def test_dicom_multi_file_series_matches_openslide(fixtures_dir):
    ours = open_slide(fixtures_dir / "boxes_0.dcm", backend="dicom")
    ref = open_slide(fixtures_dir / "boxes_0.dcm", backend="openslide")
    assert ours.mpp == pytest.approx(0.499) and ours.mpp_source == "vendor:dicom.PixelSpacing"
    np.testing.assert_array_equal(ours.read_region(0, 0, 0, (16, 16)), ref.read_region(0, 0, 0, (16, 16)))
    # Opening the THUMBNAIL instance finds the VOLUME instance of the same series.
    folder = open_slide(fixtures_dir, backend="dicom")  # a folder holding the series
    assert folder.level_dimensions == ((16, 16),) and folder.mpp == pytest.approx(0.499)
    thumb = open_slide(fixtures_dir / "boxes_1.dcm", backend="dicom")
    assert thumb.level_dimensions == ((16, 16),)
    np.testing.assert_array_equal(thumb.read_region(0, 0, 0, (16, 16)), ref.read_region(0, 0, 0, (16, 16)))


def test_unsupported_files_say_why(tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image, not a slide
    meta.MediaStorageSOPInstanceUID = "1.2.3"
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = "1.2.3"
    ct = tmp_path / "ct.dcm"
    ds.save_as(ct, enforce_file_format=True)
    with pytest.raises(UnsupportedSlideError, match="because.*not a VL Whole Slide"):
        open_slide(ct)
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(UnsupportedSlideError, match="junk.svs: unsupported because openslide"):
        open_slide(junk)


def test_pickles_as_path_and_reopens_lazily(cmu_path):
    s = open_slide(cmu_path)
    expected = s.read_region(100, 100, 0, (32, 32))
    blob = pickle.dumps(s)
    assert len(blob) < 1000  # path + options only, no handle or pixels
    clone = pickle.loads(blob)
    assert clone._backend is None  # nothing opened until first use
    np.testing.assert_array_equal(clone.read_region(100, 100, 0, (32, 32)), expected)
    assert clone.backend == "openslide" and clone.mpp == s.mpp


def test_read_region_safe_recovers_from_finer_level_then_marks_failed(synthetic_pyramid, monkeypatch):
    import cv2

    path, levels = synthetic_pyramid
    s = open_slide(path, backend="tiffslide")
    backend_cls = type(s.handle)
    original = backend_cls.read_level

    def broken_level2(self, level, *args):
        if level == 2:
            raise OSError("Not a JPEG file: starts with 0x00 0x00")
        return original(self, level, *args)

    monkeypatch.setattr(backend_cls, "read_level", broken_level2)
    pixels, status = s.read_region_safe(400, 200, 2, (50, 40))
    assert status == TILE_OK
    expected = cv2.resize(levels[1][100:180, 200:300], (50, 40), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(pixels, expected)

    monkeypatch.setattr(backend_cls, "read_level", lambda self, *a: (_ for _ in ()).throw(OSError("broken")))
    pixels, status = s.read_region_safe(400, 200, 2, (50, 40))
    assert status == TILE_FAILED and (pixels == 255).all()


def test_scaled_image_never_reads_a_full_plane(cmu_path, monkeypatch):
    s = open_slide(cmu_path)
    sizes = []
    original = type(s).read_level_region

    def spy(self, level, lx, ly, size):
        sizes.append(size[0] * size[1])
        return original(self, level, lx, ly, size)

    monkeypatch.setattr(type(s), "read_level_region", spy)
    img = s.read_scaled(16.0, chunk_px=512)
    assert img.shape == (int(np.ceil(2967 / 16)), int(np.ceil(2220 / 16)), 3)
    assert max(sizes) <= 512 * 512 < 2220 * 2967
    assert s.thumbnail(256).shape[:2] == (256, round(2220 / 2967 * 256))


def test_mpp_lookup_order_and_units():
    props = {"aperio.MPP": "0.2527", "tiff.XResolution": "39573", "tiff.ResolutionUnit": "centimeter"}
    cands = candidates_from_properties(props)
    assert [c.source for c in cands] == ["vendor:aperio.MPP", "tiff_resolution"]
    assert cands[1].x == pytest.approx(1e4 / 39573)
    assert tiff_resolution_mpp(101600, 101600, "inch")[0] == pytest.approx(0.25)
    philips = candidates_from_properties({"philips.DICOM_PIXEL_SPACING": '"0.000243" "0.000242"'})
    assert (philips[0].x, philips[0].y) == pytest.approx((0.242, 0.243))
    assert resolve_mpp("a.svs", cands).source == "vendor:aperio.MPP"
    with pytest.raises(MissingMppError, match="a.tif.*--mpp"):
        resolve_mpp(
            "a.tif", candidates_from_properties({"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch"})
        )


def test_openslide_raw_premultiplied_path_matches_public_api(cmu_path):
    import openslide

    s = open_slide(cmu_path)
    assert s.handle._raw is not None  # the fast path is in use on this platform
    ref = openslide.OpenSlide(str(cmu_path))
    for x0, y0 in [(0, 0), (2100, 2900), (-30, 100)]:
        ours = s.read_region(x0, y0, 0, (200, 150))
        public = composite_on_white(np.asarray(ref.read_region((x0, y0), 0, (200, 150))))
        assert np.abs(ours.astype(int) - public.astype(int)).max() <= 1


def test_synthetic_dicom_series_j2k_and_sparse(tmp_path):
    from tests.wsi._dicom_synth import write_instance

    rng = np.random.default_rng(1)
    level0 = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    level1 = np.ascontiguousarray(level0[::2, ::2])
    write_instance(
        tmp_path / "a.dcm",
        level0,
        128,
        series_uid="1.2.9",
        instance_uid="1.2.9.1",
        spacing_mm=0.00025,
        codec="j2k",
    )
    write_instance(
        tmp_path / "b.dcm",
        level1,
        64,
        series_uid="1.2.9",
        instance_uid="1.2.9.2",
        spacing_mm=0.0005,
        sparse=True,
    )
    write_instance(
        tmp_path / "c.dcm",
        level1[:50, :50],
        64,
        series_uid="1.2.9",
        instance_uid="1.2.9.3",
        spacing_mm=0.0005,
        image_type="LABEL",
    )
    s = open_slide(tmp_path / "b.dcm", backend="dicom")  # any instance of the series opens the pyramid
    assert s.level_dimensions == ((420, 300), (210, 150))
    assert s.mpp == pytest.approx(0.25) and s.mpp_source == "vendor:dicom.PixelSpacing"
    np.testing.assert_array_equal(s.read_region(0, 0, 0, (420, 300)), level0)  # lossless J2K frames
    np.testing.assert_array_equal(
        s.read_region(90, 50, 1, (100, 80)), level1[25:105, 45:145]
    )  # sparse frames
    edge = s.read_region(400, 290, 0, (40, 20))
    np.testing.assert_array_equal(edge[:10, :20], level0[290:, 400:])
    assert (edge[10:] == 255).all() and (edge[:, 20:] == 255).all()
