"""``gpfm bench`` with a report-generation task and a VQA task for two encoders, end to end from real patches.

EfficientNet-Lite0 (real ImageNet weights) and ResNet50 with explicit random weights embed 15 LC25000 patches
per class through the ROI feature cache (``images_root``); templated captions and questions come from the
labels, split by sha256 group. The test checks the pipeline, the results table, the stored provenance and the
HTML report's samples and VQA tables - not the scores (the sets are tiny).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gpfm.eval.run.runner import run_suite
from tests.eval._multimodal_data import caption_records, vqa_records

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
PER_CLASS = 15
ENCODERS = ["efficientnet-lite0-imagenet", "resnet50-imagenet"]
SUITE = """
name: multimodal-demo
tasks:
  - id: lc25000-captions
    family: report_generation
    protocol: report.histgen
    protocol_options: {d_model: 32, ff_dim: 64, n_layers: 1, n_memory: 2, max_len: 24, min_freq: 1, epochs: 3,
                       patience: 2, beam_size: 2, n_heads: 2}
    data: {kind: report_records, format: csv, records_file: captions.csv, images_root: IMAGES}
  - id: lc25000-vqa
    family: vqa
    protocol: vqa.fusion
    protocol_options: {d_model: 32, n_heads: 2, n_layers: 1, question_layers: 1, epochs: 3, patience: 2}
    data: {kind: vqa_records, format: csv, records_file: questions.csv, images_root: IMAGES}
"""


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bench_runs_report_and_vqa_tasks_for_two_encoders(
    lc25000_dir: Path, lc25000_table, tmp_path: Path
) -> None:
    picked: dict[str, int] = {}
    items = []
    for row in sorted(lc25000_table, key=lambda r: r["file"]):
        if picked.get(row["label"], 0) < PER_CLASS:
            picked[row["label"]] = picked.get(row["label"], 0) + 1
            items.append((row["sha256"], row["label"], row["file"]))
    from tests.eval._multimodal_data import lc25000_split

    by_sha = {sha: file for sha, _, file in items}
    triples = [(sha, label, lc25000_split(sha)) for sha, label, _ in items]
    with open(tmp_path / "captions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "split", "group"])
        for r in caption_records(triples):
            w.writerow([by_sha[r.id], r.text, r.split, r.id])
    with open(tmp_path / "questions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "question", "answer", "closed", "split", "group"])
        for r in vqa_records(triples):
            w.writerow([by_sha[r.image_id], r.question, r.answer, int(r.closed), r.split, r.image_id])
    (tmp_path / "suite.yaml").write_text(SUITE.replace("IMAGES", str(lc25000_dir)))

    out = tmp_path / "run"
    table = run_suite(
        tmp_path / "suite.yaml",
        ENCODERS,
        out,
        device="cpu",
        precision="fp32",
        weights={"resnet50-imagenet": "random"},
    )
    assert [(r.task, r.encoder, r.status) for r in table.rows] == [
        (t, e, "ok") for t in ("lc25000-captions", "lc25000-vqa") for e in ENCODERS
    ], [(r.protocol, r.encoder, r.reason) for r in table.rows]
    for row in table.rows:
        print(
            f"{row.task} {row.protocol} {row.encoder}: {row.primary_metric}={row.value:.3f} "
            f"({row.seconds:.1f} s)"
        )
        result = json.loads((out / row.result_path).read_text())
        assert result["protocol"] in ("report.histgen", "vqa.fusion") and result["protocol_version"] == 1
        assert row.primary_metric == ("BLEU_4" if row.task == "lc25000-captions" else "overall_accuracy")
        folder = (out / row.result_path).parent
        kind = "samples" if row.task == "lc25000-captions" else "vqa_breakdown"
        assert (folder / result["artifacts"][kind]).is_file()
        sha = result["provenance"]["encoder_weights_sha256"]
        assert (sha == "random") == (row.encoder == "resnet50-imagenet")
        assert result["provenance"]["feature_source"] == "images_root"
    html = (out / "report.html").read_text()
    assert "Generated vs reference" in html and "VQA accuracy" in html
    assert all(e in html for e in ENCODERS)
