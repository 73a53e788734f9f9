"""A bad slide never stops the batch: missing mpp, truncated and corrupt files are recorded with one clear reason."""

from __future__ import annotations

import json
import shutil

import pytest

from gpfm.extract import extract_slides
from gpfm.extract.state import read_summary_csv
from gpfm.wsi import read_coords

pytestmark = pytest.mark.realdata


def _run(slides, out, encoder, **kw):
    return extract_slides(slides, encoder, out, weights="random", device="cpu", precision="fp32", batch_size=16,
                          workers=0, progress=False, **kw)


def test_missing_mpp_fails_clearly_then_works_with_mpp(tmp_path, tcga, cmu, tiny_encoder):
    out = tmp_path / "job"
    first = _run([tcga, cmu], out, tiny_encoder)
    assert first.counts == {"done": 1, "failed": 1}
    (fail,) = first.failures
    assert fail.slide_id == "TCGA-CR-7395-01A-01-TS1" and fail.error_class == "MissingMppError"
    assert "--mpp" in fail.error and "\n" not in fail.error
    rows = {r["slide_id"]: r for r in read_summary_csv(out / "summary.csv")}
    assert rows["TCGA-CR-7395-01A-01-TS1"]["error_class"] == "MissingMppError"
    assert rows["CMU-1-Small-Region"]["status"] == "done"
    # a rerun without an mpp does not silently retry; with an mpp the missing input is supplied and it runs
    assert _run([tcga], out, tiny_encoder).counts == {"failed_earlier": 1}
    manifest = tmp_path / "slides.csv"
    manifest.write_text(f"slide_id,path,mpp\nTCGA-CR-7395-01A-01-TS1,{tcga},0.25\n")
    fixed = _run([manifest], out, tiny_encoder)
    assert fixed.counts == {"done": 1}
    coords, attrs = read_coords(out / "20x_256px_0px_overlap" / "patches" / "TCGA-CR-7395-01A-01-TS1_patches.h5")
    # 0.25 µm/px: level 1 (downsample 2.0005 → 0.5001 µm/px) is within 5% of the 0.5 µm/px target
    assert attrs["read_level"] == 1 and attrs["mpp_source"] == "manifest" and attrs["read_size_px"] == 256
    assert attrs["patch_size_level0"] == 512 and len(coords) > 0


def test_global_mpp_override_is_recorded(tmp_path, tcga, tiny_encoder):
    summary = _run([tcga], tmp_path / "job", tiny_encoder, mpp=0.25)
    assert summary.counts == {"done": 1}
    assert summary.slides[0].mpp == 0.25 and summary.slides[0].mpp_source == "cli_override"


def test_truncated_and_corrupt_slides_in_a_batch(tmp_path, cmu, tiny_encoder):
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(cmu, folder / "good.svs")
    data = cmu.read_bytes()
    (folder / "truncated.svs").write_bytes(data[: len(data) // 3])
    (folder / "garbage.svs").write_bytes(b"this is not a slide" * 100)
    damaged = bytearray(data)  # opens fine, but a run of JPEG tiles is zeroed out
    damaged[len(data) // 4 : len(data) // 4 + 400_000] = bytes(400_000)
    (folder / "zeroed.svs").write_bytes(bytes(damaged))
    out = tmp_path / "job"
    summary = _run([folder], out, tiny_encoder)
    by_id = {s.slide_id: s for s in summary.slides}
    assert by_id["good"].status == "done" and by_id["good"].n_tiles > 20
    for bad in ("truncated", "garbage", "zeroed"):
        state = by_id[bad]
        assert state.status == "failed", state
        assert state.error.startswith(f"{bad}.svs: ") and "\n" not in state.error
    assert by_id["garbage"].error_class == "UnsupportedSlideError"
    assert by_id["truncated"].error_class == "TruncatedSlideError"  # distinct from an unsupported format
    assert "JPEG" in by_id["zeroed"].error
    features_dir = out / "20x_256px_0px_overlap" / "features_test-tiny"
    assert sorted(p.name for p in features_dir.iterdir()) == ["good.h5"]  # no partial file, no leftover lock
    record = json.loads(summary.record_path.read_text())
    assert {f["slide_id"] for f in record["failures"]} == {"truncated", "garbage", "zeroed"}


def test_skip_errors_false_raises_after_recording(tmp_path, tcga, tiny_encoder):
    with pytest.raises(RuntimeError, match="MissingMppError"):
        _run([tcga], tmp_path / "job", tiny_encoder, skip_errors=False)
    state = json.loads((tmp_path / "job" / "state" / "TCGA-CR-7395-01A-01-TS1.json").read_text())
    assert state["status"] == "failed"
