"""Slide list: folders, manifests, duplicates, mpp overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpfm.extract.slides import SlideListError, collect_slides, slide_id_for


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_scan_is_sorted_and_filtered(tmp_path):
    for name in ("b.svs", "a.SVS", "c.ndpi", "notes.txt", ".hidden.svs", "d.ome.tiff"):
        _touch(tmp_path / name)
    entries = collect_slides([tmp_path])
    assert [e.slide_id for e in entries] == ["a", "b", "c", "d"]
    assert all(e.mpp is None and e.mpp_source is None for e in entries)
    assert slide_id_for(Path("x/y.ome.tif")) == "y"


def test_recursive_scan(tmp_path):
    _touch(tmp_path / "sub" / "s1.svs")
    with pytest.raises(SlideListError, match="--recursive"):
        collect_slides(tmp_path)
    assert [e.slide_id for e in collect_slides(tmp_path, recursive=True)] == ["s1"]


def test_manifest_relative_paths_mpp_and_global_override(tmp_path):
    _touch(tmp_path / "slides" / "one.svs")
    _touch(tmp_path / "slides" / "two.tif")
    (tmp_path / "m.csv").write_text("slide_id,path,mpp\nA,slides/one.svs,0.25\nB,slides/two.tif,\n")
    entries = collect_slides([tmp_path / "m.csv"], mpp=0.5)
    assert [(e.slide_id, e.mpp, e.mpp_source) for e in entries] == [("A", 0.25, "manifest"), ("B", 0.5, "cli_override")]
    assert entries[0].path == tmp_path / "slides" / "one.svs"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("id,path\nA,x.svs\n", "lacks column"),
        ("slide_id,path\nA,missing.svs\n", "does not exist"),
        ("slide_id,path,mpp\nA,one.svs,abc\n", "not a number"),
        ("slide_id,path,mpp\nA,one.svs,353\n", "plausible range"),
        ("slide_id,path\n,one.svs\n", "empty slide_id"),
    ],
)
def test_manifest_errors_name_the_problem(tmp_path, text, match):
    _touch(tmp_path / "one.svs")
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(SlideListError, match=match):
        collect_slides(tmp_path / "m.csv")


def test_duplicate_ids_are_an_error(tmp_path):
    a = _touch(tmp_path / "x" / "s.svs")
    b = _touch(tmp_path / "y" / "s.tiff")
    with pytest.raises(SlideListError, match="duplicate slide ids .*s:"):
        collect_slides([a, b])


def test_missing_input(tmp_path):
    with pytest.raises(SlideListError, match="no such file"):
        collect_slides(tmp_path / "nope.svs")
