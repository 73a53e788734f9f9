"""The nine models of GPFM's comparison run through ``gpfm bench`` (random weights; real LC25000 tiles).

A pipeline check, not a benchmark: every encoder of the paper's table embeds the tiles through its own
preprocessing, the protocol runs on its features and the leaderboard ranks all nine. The metric values of
random weights mean nothing and are not asserted beyond being valid.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gpfm.eval.run.runner import run_suite
from gpfm.models import PAPER_COMPARISON

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
PER_CLASS = 6

SUITE = """
name: paper-encoders-smoke
version: "1"
description: one cheap ROI task for the nine encoders of the paper's comparison
tasks:
  - id: lc25000-knn
    family: roi_classification
    description: CL2N 20-NN on a small LC25000 subset
    protocol: roi.knn.cl2n
    data:
      kind: roi_images
      root: {root}
      csv: {csv}
      labels: [lung_aca, lung_n, lung_scc]
      split: {{method: group_hash, test_size: 0.34, val_size: 0.0, seed: 0}}
"""


def test_the_nine_paper_encoders_run_through_bench(lc25000_dir: Path, lc25000_table, tmp_path: Path) -> None:
    assert len(PAPER_COMPARISON) == 9
    subset = tmp_path / "subset.csv"
    picked: dict[str, int] = {}
    with open(subset, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        for row in sorted(lc25000_table, key=lambda r: r["file"]):
            if picked.get(row["label"], 0) < PER_CLASS:
                picked[row["label"]] = picked.get(row["label"], 0) + 1
                writer.writerow([row["file"], row["label"]])
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(root=lc25000_dir, csv=subset))
    out = tmp_path / "run"
    table = run_suite(suite, list(PAPER_COMPARISON), out, device="cpu", precision="fp32",
                      weights=dict.fromkeys(PAPER_COMPARISON, "random"))
    assert {r.encoder for r in table.rows} == set(PAPER_COMPARISON)
    assert [r.status for r in table.rows] == ["ok"] * 9, [(r.encoder, r.reason) for r in table.rows]
    for row in table.rows:
        assert 0.0 <= row.value <= 1.0
        prov = json.loads((out / row.result_path).read_text())["provenance"]
        assert prov["encoder_weights_sha256"] == "random"
        assert prov["precision_resolved"] == "fp32"
    board = json.loads((out / "leaderboard.json").read_text())["overall"]
    assert {e["encoder"] for e in board["entries"]} == set(PAPER_COMPARISON)
