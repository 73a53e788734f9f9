"""The shipped LC25000 demo suite, end to end on real patches with two real encoders (a small subset).

EfficientNet-Lite0 with its real ImageNet weights and ResNet50 with explicit random weights
(``--weights resnet50-imagenet=random``) embed 15 patches per class; the demo's splits keep byte-identical
images on one side (sha256 groups). LC25000 near-duplicates make the numbers optimistic: the test checks the
pipeline, the provenance and the resume, and only that ImageNet features are far above chance.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gpfm.eval.run.runner import run_suite

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
PER_CLASS = 15


@pytest.fixture
def subset_csv(lc25000_dir: Path, lc25000_table: list[dict[str, str]], tmp_path: Path) -> Path:
    picked: dict[str, int] = {}
    path = tmp_path / "subset.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        for row in sorted(lc25000_table, key=lambda r: r["file"]):
            if picked.get(row["label"], 0) < PER_CLASS:
                picked[row["label"]] = picked.get(row["label"], 0) + 1
                writer.writerow([row["file"], row["label"]])
    return path


def test_lc25000_demo_suite(
    shared_data: Path, subset_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LC25000_CSV", str(subset_csv))
    encoders = ["efficientnet-lite0-imagenet", "resnet50-imagenet"]
    out = tmp_path / "run"
    kwargs = dict(
        data_root=shared_data, device="cpu", precision="fp32", weights={"resnet50-imagenet": "random"}
    )
    table = run_suite("lc25000_demo", encoders, out, **kwargs)
    assert [r.status for r in table.rows] == ["ok"] * 14, [
        (r.protocol, r.encoder, r.reason) for r in table.rows
    ]
    for row in table.rows:
        print(
            f"{row.task} {row.protocol_id} {row.encoder}: {row.primary_metric}={row.value:.3f} "
            f"CI [{row.ci_low:.3f}, {row.ci_high:.3f}]"
        )
    effnet = table.find("lc25000-lung", "roi.linear.uni", "efficientnet-lite0-imagenet")
    assert effnet.value > 0.6  # chance is 1/3 (balanced accuracy, 3 balanced classes)
    result = json.loads((out / effnet.result_path).read_text())
    prov = result["provenance"]
    assert prov["encoder_weights_sha256"] not in ("", "random") and prov["precision"] == "fp32"
    assert prov["split"]["method"] == "group_hash"
    resnet = json.loads(
        (out / table.find("lc25000-lung", "roi.linear.uni", "resnet50-imagenet").result_path).read_text()
    )
    assert resnet["provenance"]["encoder_weights_sha256"] == "random"
    board = json.loads((out / "leaderboard.json").read_text())["overall"]
    assert {e["encoder"] for e in board["entries"]} == set(encoders) and len(board["units"]) == 4
    print(
        "leaderboard:",
        [(e["encoder"], e["average_rank"], round(e["mean_score"], 3)) for e in board["entries"]],
    )
    assert (out / "report.html").is_file()

    again = run_suite("lc25000_demo", encoders, out, **kwargs)
    assert all(r.reused for r in again.rows) and [r.value for r in again.rows] == [
        r.value for r in table.rows
    ]
