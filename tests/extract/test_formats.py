"""The folder scan: every format the readers open, DICOM folders as one slide, nothing skipped silently."""

from __future__ import annotations

import shutil

import pytest

from gpfm.extract.slides import SLIDE_EXTENSIONS, SlideListError, collect_slides, scan_folder_report


@pytest.mark.parametrize("ending", [".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu",
                                    ".svslide", ".czi", ".dcm"])
def test_every_openslide_format_is_scanned(ending):
    assert ending in SLIDE_EXTENSIONS


def test_scan_reports_what_it_does_not_read(tmp_path):
    for name in ("a.svs", "B.NDPI", "c.czi", "d.ome.tiff", "notes.docx", "archive.zip", "labels.csv", ".hidden.svs"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "m.mrxs").write_bytes(b"x")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "Data0000.dat").write_bytes(b"x")  # MIRAX side folder: not a slide, not reported
    (tmp_path / "series").mkdir()
    for i in range(2):
        (tmp_path / "series" / f"instance{i}.dcm").write_bytes(b"x")
    slides, skipped = scan_folder_report(tmp_path)
    assert [p.name for p in slides] == ["B.NDPI", "a.svs", "c.czi", "d.ome.tiff", "m.mrxs", "series"]
    assert sorted(s.path.name for s in skipped) == ["archive.zip", "notes.docx"]
    assert all("not a slide format" in s.reason for s in skipped)
    captured: list = []
    entries = collect_slides(tmp_path, skipped=captured)
    assert {e.slide_id for e in entries} == {"a", "B", "c", "d", "m", "series"} and len(captured) == 2


def test_a_dicom_series_folder_is_one_slide(tmp_path, cmu):
    fixtures = cmu.parent / "openslide-python-fixtures"
    series = tmp_path / "case7"
    series.mkdir()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(fixtures / name, series / name)
    entries = collect_slides(series)
    assert [(e.slide_id, e.path) for e in entries] == [("case7", series)]


def test_folder_without_slides_names_what_it_found(tmp_path):
    (tmp_path / "scan.vsi").write_bytes(b"x")
    with pytest.raises(SlideListError, match=r"scan.vsi"):
        collect_slides(tmp_path)
