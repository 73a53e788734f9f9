"""Integration: the real protocols and loaders of every family through the runner, on synthetic features.

Slide bags (HDF5 ``features`` + ``coords`` per slide, per encoder folder), a survival table, VQA and report
records with ``.npz`` features are written to a temporary folder; the two "encoders" differ only in how much
signal their features carry (``gpfm``: tumour tiles shifted by 4 sd, ``resnet50-imagenet``: no signal), so the
ranking is known in advance. Protocol budgets are cut (a few epochs) through ``protocol_options``, which the
resolved config records.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from gpfm.eval.run.runner import run_suite

ENCODERS = {"gpfm": 4.0, "resnet50-imagenet": 0.0}  # shift of the tumour tiles along feature 0
N_SLIDES, N_TILES, DIM = 40, 12, 16


def _write_data(root: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.array([i % 2 for i in range(N_SLIDES)])
    split = np.array(["train"] * 24 + ["val"] * 6 + ["test"] * 10)
    ids = [f"slide-{i:02d}" for i in range(N_SLIDES)]
    for enc, shift in ENCODERS.items():
        folder = root / "features" / enc
        folder.mkdir(parents=True)
        pooled = []
        for i, sid in enumerate(ids):
            feats = rng.normal(size=(N_TILES, DIM)).astype(np.float32)
            if labels[i]:
                feats[:3, 0] += shift  # three "tumour" tiles
            with h5py.File(folder / f"{sid}.h5", "w") as fh:
                fh["features"] = feats
                fh["coords"] = np.stack([np.arange(N_TILES) * 224, np.zeros(N_TILES)], 1).astype(np.int64)
            pooled.append(feats)
        np.savez(root / f"{enc}.npz", ids=np.array(ids), features=np.stack([f.mean(0) for f in pooled]))
    lines = ["slide_id,case_id,label,split"] + [
        f"{s},case-{s},{'tumour' if y else 'normal'},{p}" for s, y, p in zip(ids, labels, split, strict=True)
    ]
    (root / "wsi.csv").write_text("\n".join(lines) + "\n")
    months = np.where(labels == 1, rng.uniform(2, 20, N_SLIDES), rng.uniform(15, 60, N_SLIDES))
    censored = (rng.random(N_SLIDES) < 0.3).astype(int)
    lines = ["case_id,slide_id,survival_months,censorship,split"] + [
        f"case-{s},{s},{m:.2f},{c},{p}" for s, m, c, p in zip(ids, months, censored, split, strict=True)
    ]
    (root / "survival.csv").write_text("\n".join(lines) + "\n")
    lines = ["id,question,answer,split"]
    for s, y, p in zip(ids, labels, split, strict=True):
        lines.append(f"{s},is there tumour in this slide?,{'yes' if y else 'no'},{p}")
        lines.append(f"{s},what tissue is shown?,{'carcinoma' if y else 'stroma'},{p}")
    (root / "vqa.csv").write_text("\n".join(lines) + "\n")
    lines = ["id,text,split"] + [
        f"{s},{'invasive carcinoma is present .' if y else 'benign stroma only .'},{p}"
        for s, y, p in zip(ids, labels, split, strict=True)
    ]
    (root / "reports.csv").write_text("\n".join(lines) + "\n")


SUITE = """
name: all-families
tasks:
  - id: wsi-synthetic
    family: wsi_classification
    protocol: wsi.abmil.gpfm
    protocol_options: {max_epochs: 4, min_epochs: 0, patience: 4, bootstrap_resamples: 50, num_threads: 1}
    data: {kind: slide_h5, labels: wsi.csv, features: "features/{encoder}", split_column: split}
  - id: surv-synthetic
    family: survival
    protocol: [surv.abmil_nll, surv.coxnet]
    protocol_options:
      surv.abmil_nll: {max_epochs: 2, min_epochs: 0, patience: 2, bootstrap_resamples: 50, num_threads: 1}
      surv.coxnet: {bootstrap_resamples: 50}
    data: {kind: survival_h5, labels: survival.csv, features: "features/{encoder}", split_column: split}
  - id: vqa-synthetic
    family: vqa
    protocol: vqa.fusion
    protocol_options: {epochs: 2, d_model: 32, n_heads: 2, n_layers: 1, question_layers: 1}
    data: {kind: vqa_records, format: csv, records_file: vqa.csv, features_file: "{encoder}.npz"}
  - id: report-synthetic
    family: report_generation
    protocol: report.histgen
    protocol_options:
      {epochs: 2, d_model: 32, n_heads: 2, n_layers: 1, ff_dim: 64, min_freq: 1, beam_size: 1, max_len: 12}
    data: {kind: report_records, format: csv, records_file: reports.csv, features_file: "{encoder}.npz"}
"""


@pytest.mark.slow
def test_every_family_through_the_runner(tmp_path: Path) -> None:
    _write_data(tmp_path)
    (tmp_path / "suite.yaml").write_text(SUITE)
    out = tmp_path / "run"
    table = run_suite(
        tmp_path / "suite.yaml", list(ENCODERS), out, device="cpu", weights={e: "random" for e in ENCODERS}
    )
    problems = [(r.task, r.protocol, r.encoder, r.reason) for r in table.rows if not r.ok]
    assert not problems, problems
    assert len(table.rows) == 2 * 5
    for row in table.rows:
        assert row.protocol_version is not None and row.primary_metric
        stored = json.loads((out / row.result_path).read_text())
        assert stored["config"]["protocol"] == row.protocol  # resolved config with the overrides recorded
    wsi = {r.encoder: r.value for r in table.rows if r.task == "wsi-synthetic"}
    assert wsi["gpfm"] > 0.8 and wsi["gpfm"] > wsi["resnet50-imagenet"]
    board = json.loads((out / "leaderboard.json").read_text())
    assert set(board["families"]) == {"wsi_classification", "survival", "vqa", "report_generation"}
    html = (out / "report.html").read_text()
    for section in (
        "ROC curves",
        "Kaplan–Meier curves",
        "MIL attention",
        "VQA accuracy",
        "Generated vs reference",
    ):
        assert section in html, section
