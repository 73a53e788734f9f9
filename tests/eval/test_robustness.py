"""The robustness family on real LC25000 tiles, with two encoders whose answers are known.

``test-colour`` reads only colour (per-channel mean and spread); ``test-gray`` is colour-blind (the gradient
texture of the channel-mean grey image, z-scored per tile). Two pseudo-sites are made from disjoint real tiles:
site A as scanned, site B with its red and blue channels swapped — a pure colour change that leaves the grey
image untouched. So the colour encoder must show a strong site signature and a large cross-site gap, and the
colour-blind one neither; under stain (HED) jitter the colour encoder must move more, under blur the grey one.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gpfm.eval.protocol import TASK_LOADERS, TaskContext, create_protocol
from gpfm.models import ENCODERS, EncoderSpec, Preprocess, TokenOutput, WeightSource, register_encoder
from gpfm.models.spec import HALF_MEAN, HALF_STD

pytestmark = pytest.mark.realdata
PER_CLASS = 12
GRID = {"hed": [0.05, 0.1], "blur": [1.0, 2.0]}


class _Colour(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


class _Gray(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(dim=1)  # channel mean: blind to any permutation of the colour channels
        g = (g - g.mean(dim=(1, 2), keepdim=True)) / (g.std(dim=(1, 2), keepdim=True) + 1e-6)
        gx, gy = g[:, :, 1:] - g[:, :, :-1], g[:, 1:, :] - g[:, :-1, :]
        mag = torch.cat([gx.abs().flatten(1), gy.abs().flatten(1)], dim=1)
        edges = torch.linspace(0, 3, 17)
        hist = torch.stack([((mag >= lo) & (mag < hi)).float().mean(1) for lo, hi in zip(edges[:-1], edges[1:],
                                                                                             strict=True)], 1)
        return hist


def _register(name: str, module: type[nn.Module], dim: int) -> str:
    if name not in ENCODERS:
        register_encoder(EncoderSpec(
            name=name, architecture="test", build=module, convert_state_dict=lambda c: (dict(c), "plain"),
            forward_tokens=lambda m, x: TokenOutput(cls=m(x), patch=None, grid=None, pooled=m(x)),
            embed_dim=dim, token_dim=None, patch_size=None, num_prefix_tokens=0, pooling="pooled",
            preprocess=Preprocess(input_size=96, mean=HALF_MEAN, std=HALF_STD, norm_name="half"),
            weights=WeightSource(env_var=f"{name.upper().replace('-', '_')}_WEIGHTS"),
            half_precision_ok=frozenset(), is_pathology=False, description="tests only"))
    return name


@pytest.fixture(scope="module")
def encoders() -> list[str]:
    return [_register("test-colour", _Colour, 6), _register("test-gray", _Gray, 16)]


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory, lc25000_dir, lc25000_table) -> Path:
    root = tmp_path_factory.mktemp("sites")
    rows, picked = [], {}
    for row in sorted(lc25000_table, key=lambda r: r["file"]):
        n = picked.get(row["label"], 0)
        if n >= 2 * PER_CLASS:
            continue
        picked[row["label"]] = n + 1
        site = "A" if n < PER_CLASS else "B"
        rgb = np.asarray(Image.open(lc25000_dir / row["file"]).convert("RGB"))
        if site == "B":
            rgb = rgb[..., ::-1]  # red <-> blue: a colour-only "scanner"
        name = f"{site}/{Path(row['file']).name}"
        (root / site).mkdir(exist_ok=True)
        Image.fromarray(np.ascontiguousarray(rgb)).save(root / name.replace(".jpeg", ".png"))
        rows.append([name.replace(".jpeg", ".png"), row["label"], site])
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "site"], *rows])
    return root


def _data(root: Path, encoder: str, tmp_path: Path):
    ctx = TaskContext(encoder=encoder, base_dir=root, cache_dir=tmp_path / "cache", device="cpu", precision="fp32",
                      weights="random", batch_size=32)
    return TASK_LOADERS.get("robustness_images")({"kind": "robustness_images", "root": str(root),
                                                  "perturbations": GRID}, ctx)


def _run(name: str, data, tmp_path: Path, encoder: str):
    out = tmp_path / f"{name}-{encoder}"
    out.mkdir()
    return create_protocol(name).run(data, out, task="sites", encoder=encoder)


def test_colour_reader_has_a_site_signature_and_the_colour_blind_one_does_not(two_sites, encoders, tmp_path):
    colour, gray = (_data(two_sites, e, tmp_path) for e in encoders)
    leak_colour = _run("robust.site_signature", colour, tmp_path, "c").metrics["site_leakage"]
    leak_gray = _run("robust.site_signature", gray, tmp_path, "g").metrics["site_leakage"]
    assert leak_colour > 0.8 and leak_gray < 0.3, (leak_colour, leak_gray)
    gap_colour = _run("robust.cross_site", colour, tmp_path, "c").metrics["site_gap"]
    gap_gray = _run("robust.cross_site", gray, tmp_path, "g").metrics["site_gap"]
    assert gap_colour > gap_gray + 0.1, (gap_colour, gap_gray)


def test_invariance_moves_with_what_each_encoder_reads(two_sites, encoders, tmp_path):
    colour, gray = (_data(two_sites, e, tmp_path) for e in encoders)
    m_colour = _run("robust.invariance", colour, tmp_path, "c").metrics
    m_gray = _run("robust.invariance", gray, tmp_path, "g").metrics
    assert m_colour["knn_agreement@hed:0.1"] <= m_gray["knn_agreement@hed:0.1"]
    assert 1 - m_colour["cosine@hed:0.1"] > 1 - m_gray["cosine@hed:0.1"]  # stain moves the colour reader more
    assert 1 - m_gray["cosine@blur:2"] > 1 - m_colour["cosine@blur:2"]  # blur moves the texture reader more
    assert m_gray["cosine@blur:2"] < m_gray["cosine@blur:1"]  # and more with a stronger blur
    assert set(m_colour) >= {"mean_cosine", "mean_knn_agreement", "mean_accuracy_drop", "clean_balanced_accuracy"}


def test_perturbations_are_deterministic_and_real_changes():
    from gpfm.eval.families.robustness import DEFAULT_GRID, Perturbation

    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for kind, strengths in DEFAULT_GRID.items():
        for s in strengths:
            p = Perturbation(kind, s)
            a, b = p.apply(rgb, "tile-1"), p.apply(rgb, "tile-1")
            assert a.shape == rgb.shape and a.dtype == np.uint8 and np.array_equal(a, b)
            assert not np.array_equal(a, rgb), p.name
    hed = Perturbation("hed", 0.1)
    assert not np.array_equal(hed.apply(rgb, "tile-1"), hed.apply(rgb, "tile-2"))  # keyed per tile
    with pytest.raises(ValueError, match="unknown perturbation"):
        Perturbation("sepia", 1).apply(rgb, "x")


def test_the_family_runs_through_the_bench_and_the_report(two_sites, encoders, tmp_path):
    from gpfm.eval.run.runner import run_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: robustness-demo\ntasks:\n  - id: two-sites\n    family: robustness\n"
        "    protocol: [robust.invariance, robust.site_signature, robust.cross_site]\n"
        f"    data:\n      kind: robustness_images\n      root: {two_sites}\n"
        "      perturbations: {hed: [0.05, 0.1], blur: [1.0, 2.0]}\n")
    table = run_suite(suite, encoders, tmp_path / "run", device="cpu", precision="fp32",
                      weights={e: "random" for e in encoders})
    assert all(r.ok for r in table.rows), [(r.protocol, r.reason) for r in table.rows]
    leak = {r.encoder: r for r in table.rows if r.protocol == "robust.site_signature"}
    assert not leak["test-colour"].higher_is_better  # site leakage: lower is better, ranked that way
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Invariance to stain" in html and "robustness" in html


def test_tcga_sites_from_barcodes_and_the_shipped_demo_suite(tmp_path):
    from gpfm.eval.families.robustness import tcga_site
    from gpfm.eval.suite import load_suite

    assert tcga_site("TCGA-CR-7395-01A-01-TS1_tile3.png", tmp_path) == "CR"
    with pytest.raises(ValueError, match="no TCGA barcode"):
        tcga_site("slide7.png", tmp_path)
    suite = load_suite("robustness_demo", data_root=tmp_path, environ={})
    assert [t.family for t in suite.tasks] == ["robustness"] and not suite.unregistered()["protocols"]
