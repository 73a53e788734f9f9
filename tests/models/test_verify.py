"""``gpfm models verify``: strict load, checksum, half-precision parity on real tiles, shareable fingerprint."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from gpfm.models import get_encoder_spec
from tests.conftest import shared_path
from tests.faults._helpers import assert_one_line_error, gpfm_cli  # noqa: F401 - fixture


def _packaged_effnet() -> str:
    from gpfm.models.encoders.efficientnet import _packaged_path

    return _packaged_path(0)


@pytest.fixture(scope="module")
def small_random_weights(tmp_path_factory):
    """A real-size ViT-S/16 (kaiko layout) with seeded random weights, saved as a user would download it."""
    spec = get_encoder_spec("kaiko-vits16")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "vits16.pth"
    torch.save(spec.build().state_dict(), path)
    return path


@pytest.mark.realdata
def test_real_weights_report_on_real_tiles(gpfm_cli, tmp_path):
    tiles = shared_path("patches", "lc25000_lung_224")
    weights = _packaged_effnet()
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    res = gpfm_cli("models", "verify", "efficientnet-lite0-imagenet", "--weights", weights, "--tiles", tiles,
                   "--n-tiles", "24", "--out", first)
    assert res.code == 0, res.err
    report = json.loads(first.read_text())
    with open(weights, "rb") as fh:
        assert report["weights_sha256"] == hashlib.sha256(fh.read()).hexdigest()
    assert report["strict_load"] and report["checkpoint_format"] == "efficientnet-lite-pytorch"
    assert report["tiles"]["n"] == 24 and len(report["fingerprint"]["tile_norms"]) == 24
    assert len(report["fingerprint"]["mean_embedding"]) == 1280
    bf16 = report["parity"]["bf16"]
    assert 0.99 < bf16["min_cosine"] <= bf16["p1_cosine"] <= bf16["median_cosine"] <= 1.0
    # the registry's fp32-only default for this model is what the measurement says
    assert bf16["passes_gate"] == ("bf16" in get_encoder_spec("efficientnet-lite0-imagenet").half_precision_ok)
    assert "bf16 vs fp32 on 24 tiles" in res.out
    # a second site with the same file and tiles: the fingerprints match
    res = gpfm_cli("models", "verify", "efficientnet-lite0-imagenet", "--weights", weights, "--tiles", tiles,
                   "--n-tiles", "24", "--out", second, "--compare", first)
    assert res.code == 0 and "MATCH" in res.out
    comparison = json.loads(second.read_text())["comparison"]
    assert comparison["match"] and comparison["same_file"] and comparison["mean_embedding_cosine"] > 0.99999


@pytest.mark.realdata
def test_different_weights_are_told_apart(gpfm_cli, tmp_path, small_random_weights):
    tiles = shared_path("patches", "lc25000_lung_224")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    other = tmp_path / "other.pth"
    sd = torch.load(small_random_weights)
    sd["norm.weight"] = sd["norm.weight"] * torch.linspace(0.2, 2.0, sd["norm.weight"].numel())
    torch.save(sd, other)
    assert gpfm_cli("models", "verify", "kaiko-vits16", "--weights", small_random_weights, "--tiles", tiles,
                    "--n-tiles", "8", "--out", a).code == 0
    res = gpfm_cli("models", "verify", "kaiko-vits16", "--weights", other, "--tiles", tiles, "--n-tiles", "8",
                   "--out", b, "--compare", a)
    assert res.code == 1 and "DIFFERENT" in res.out
    res = gpfm_cli("models", "verify", "kaiko-vits16", "--weights", other, "--tiles", tiles, "--n-tiles", "4",
                   "--out", b, "--compare", a)
    assert res.code == 2
    assert_one_line_error(res, str(a), "same encoder")


@pytest.mark.realdata
def test_wrong_checksum_and_broken_file_are_one_line_errors(gpfm_cli, tmp_path, small_random_weights):
    tiles = shared_path("patches", "lc25000_lung_224")
    res = gpfm_cli("models", "verify", "kaiko-vits16", "--weights", small_random_weights, "--tiles", tiles,
                   "--sha256", "0" * 64, "--out", tmp_path / "r.json")
    assert res.code == 2 and not (tmp_path / "r.json").exists()
    assert_one_line_error(res, str(small_random_weights), "0" * 64)
    broken = tmp_path / "broken.pth"
    sd = torch.load(small_random_weights)
    del sd["blocks.3.attn.qkv.weight"]
    torch.save(sd, broken)
    res = gpfm_cli("models", "verify", "kaiko-vits16", "--weights", broken, "--tiles", tiles, "--out",
                   tmp_path / "r.json")
    assert res.code == 2
    assert_one_line_error(res, "blocks.3.attn.qkv.weight")


@pytest.mark.realdata
def test_tiles_cut_from_a_real_slide_with_the_encoder_recipe(gpfm_cli, tmp_path, small_random_weights):
    slide = shared_path("wsi", "CMU-1-Small-Region.svs")
    out = tmp_path / "r.json"
    res = gpfm_cli("models", "verify", "kaiko-vits16", "--weights", small_random_weights, "--slide", slide,
                   "--n-tiles", "6", "--out", out)
    assert res.code == 0, res.err
    report = json.loads(out.read_text())
    assert report["tiles"]["n"] == 6 and "trident-112um" in report["tiles"]["source"]
    assert not report["random_weights"] and report["parity"]["bf16"]["median_cosine"] > 0.99
