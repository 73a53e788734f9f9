"""The suite runner on test-only protocols: table, aggregation, resuming, invalidation, failures, skips."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import SUITE_YAML

from gpfm.eval.run.results import ResultsTable
from gpfm.eval.run.runner import parse_weights_overrides, run_suite

ENCODERS = ["gpfm", "resnet50-imagenet"]
WEIGHTS = {"gpfm": "random", "resnet50-imagenet": "random"}


def _run(suite: Path, out: Path, **kw) -> ResultsTable:
    return run_suite(
        suite, ENCODERS, out, device="cpu", weights=WEIGHTS, report=kw.pop("report", False), **kw
    )


def test_table_rows_and_aggregates(bench_registry: Counter, unit_suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    table = _run(unit_suite, out, report=True)
    # 6 tasks; 'easy' has two protocols -> 7 task×protocol units × 2 encoders
    assert len(table.rows) == 14
    assert bench_registry["protocol_runs"] == 12  # 'nodata' is skipped before any loader or protocol runs
    assert bench_registry["load:gpfm"] == 5 and bench_registry["load:resnet50-imagenet"] == 5  # once per task
    skipped = [r for r in table.rows if r.status == "skipped"]
    assert {r.task for r in skipped} == {"nodata"}
    assert skipped[0].reason == f"data not found at {tmp_path.resolve()}/not-downloaded-yet"
    knn = table.find("easy", "testonly.knn-faithful", "gpfm")
    assert (
        knn.protocol_id == "testonly.knn-faithful@1"
        and "val==test (faithful)" in knn.flags
        and not knn.headline
    )
    sat = table.find("sat", "testonly.centroid", "gpfm")
    assert sat.saturated and "saturated" in sat.flags
    centroid = table.find("easy", "testonly.centroid", "gpfm")
    stored = json.loads((out / centroid.result_path).read_text())
    assert stored["provenance"]["encoder_weights_sha256"] == "random" and stored["config"]["version"] == 3
    assert centroid.ci_low <= centroid.value <= centroid.ci_high
    assert table.find("surv", "testonly.survival", "gpfm").sd == pytest.approx(0.02)

    # CSV and JSON agree and carry protocol name AND version
    with open(out / "results.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["protocol_version"] for r in csv_rows[:2]] == ["3", "1"]
    assert ResultsTable.load(out).rows == table.rows

    # leaderboard.json equals an independent computation from the CSV values (headline, non-saturated)
    board = json.loads((out / "leaderboard.json").read_text())["overall"]
    units = ["easy", "hard", "surv", "vqa"]
    vals = {
        (r["task"], r["encoder"]): float(r["value"])
        for r in csv_rows
        if r["status"] == "ok" and r["headline"] == "True" and r["saturated"] == "False"
    }
    assert sorted({t for t, _ in vals}) == sorted(units)
    for entry in board["entries"]:
        enc = entry["encoder"]
        other = next(e for e in ENCODERS if e != enc)
        ranks = [
            1.0 if vals[(t, enc)] > vals[(t, other)] else 2.0 if vals[(t, enc)] < vals[(t, other)] else 1.5
            for t in units
        ]
        assert entry["average_rank"] == pytest.approx(np.mean(ranks))
        assert entry["mean_score"] == pytest.approx(np.mean([vals[(t, enc)] for t in units]))
    assert (out / "report.html").stat().st_size > 10_000


def test_rerun_reuses_and_changed_option_invalidates_one_task(
    bench_registry: Counter, unit_suite: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = _run(unit_suite, out)
    bench_registry.clear()
    second = _run(unit_suite, out)
    assert (
        bench_registry["protocol_runs"] == 0 and sum(v for k, v in bench_registry.items() if "load" in k) == 0
    )
    assert all(r.reused for r in second.rows if r.ok)
    assert [r.value for r in second.rows] == [r.value for r in first.rows]

    # change one option of one task: only that task runs again (2 encoders), its loader too
    unit_suite.write_text(
        SUITE_YAML.replace(
            "    subgroup: external\n    protocol: testonly.centroid\n",
            "    subgroup: external\n    protocol: testonly.centroid\n    protocol_options: {shrink: 0.5}\n",
        )
    )
    bench_registry.clear()
    third = _run(unit_suite, out)
    assert bench_registry["protocol_runs"] == 2
    assert bench_registry["testonly.centroid:hard:gpfm"] == 1 and bench_registry["load:gpfm"] == 1
    assert [r.task for r in third.rows if r.ok and not r.reused] == ["hard", "hard"]

    # --rerun runs everything again
    bench_registry.clear()
    _run(unit_suite, out, rerun=True)
    assert bench_registry["protocol_runs"] == 12


def test_failure_is_recorded_and_others_finish(
    bench_registry: Counter, unit_suite: Path, tmp_path: Path
) -> None:
    unit_suite.write_text(
        SUITE_YAML.replace(
            "    subgroup: external\n", "    subgroup: external\n    protocol_options: {fail: true}\n"
        )
    )
    out = tmp_path / "run"
    table = _run(unit_suite, out)
    failed = [r for r in table.rows if r.status == "failed"]
    assert {(r.task, r.encoder) for r in failed} == {("hard", "gpfm"), ("hard", "resnet50-imagenet")}
    assert failed[0].reason == "RuntimeError: deliberate failure for the test"  # one line
    assert "Traceback" in (out / "runs" / "hard" / "testonly.centroid" / "gpfm" / "error.txt").read_text()
    assert sum(r.ok for r in table.rows) == 10
    bench_registry.clear()
    _run(unit_suite, out)  # failures are retried, finished results reused
    assert bench_registry["protocol_runs"] == 2


def test_unknown_names_and_bad_options(bench_registry: Counter, tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ntasks:\n"
        "  - id: a\n    family: roi_classification\n    protocol: [testonly.centroid, no.such.protocol]\n"
        "    protocol_options: {testonly.centroid: {bogus: 1}}\n    data: {kind: testonly_blobs}\n"
        "  - id: b\n    family: roi_classification\n    protocol: testonly.centroid\n"
        "    data: {kind: no_such_loader}\n"
    )
    from gpfm.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown encoder 'not-an-encoder'"):  # a usage error, up front
        run_suite(suite, ["gpfm", "not-an-encoder"], tmp_path / "out", device="cpu", report=False)
    assert not (tmp_path / "out" / "results.csv").exists()
    table = run_suite(
        suite,
        ["gpfm"],
        tmp_path / "out",
        device="cpu",
        weights={"gpfm": "random"},
        report=False,
    )
    reasons = {(r.task, r.protocol, r.encoder): r.reason for r in table.rows}
    assert all(r.status == "failed" for r in table.rows)
    assert reasons[("a", "testonly.centroid", "gpfm")].startswith(
        "ValueError: protocol testonly.centroid: unknown"
    )
    assert reasons[("a", "no.such.protocol", "gpfm")].startswith("unknown protocol 'no.such.protocol'")
    assert reasons[("b", "testonly.centroid", "gpfm")].startswith("no task loader registered for data kind")


def test_only_tasks_and_weights_parsing(bench_registry: Counter, unit_suite: Path, tmp_path: Path) -> None:
    table = _run(unit_suite, tmp_path / "run", only_tasks=["surv"])
    assert {r.task for r in table.rows} == {"surv"} and bench_registry["protocol_runs"] == 2
    assert parse_weights_overrides(["gpfm=/w/a.pth", "uni=random,phikon=random"]) == {
        "gpfm": "/w/a.pth",
        "uni": "random",
        "phikon": "random",
    }
    with pytest.raises(ValueError, match="expected ENCODER=PATH"):
        parse_weights_overrides(["gpfm"])
    with pytest.raises(ValueError, match="encoder names repeat"):
        run_suite(unit_suite, ["gpfm", "gpfm"], tmp_path / "x", report=False)
    with pytest.raises(ValueError, match="not in --encoders"):
        run_suite(unit_suite, ["gpfm"], tmp_path / "x", weights={"uni": "random"}, report=False)


def test_edited_data_file_invalidates(bench_registry: Counter, tmp_path: Path) -> None:
    table_file = tmp_path / "labels.csv"
    table_file.write_text("a,b\n")
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ntasks:\n  - id: a\n    family: roi_classification\n    protocol: testonly.centroid\n"
        "    data: {kind: testonly_blobs, csv: labels.csv}\n"
    )
    run_suite(suite, ["gpfm"], tmp_path / "out", device="cpu", weights={"gpfm": "random"}, report=False)
    run_suite(suite, ["gpfm"], tmp_path / "out", device="cpu", weights={"gpfm": "random"}, report=False)
    assert bench_registry["protocol_runs"] == 1
    table_file.write_text("a,b\n1,2\n")
    run_suite(suite, ["gpfm"], tmp_path / "out", device="cpu", weights={"gpfm": "random"}, report=False)
    assert bench_registry["protocol_runs"] == 2


def test_precision_is_resolved_into_the_key(
    bench_registry: Counter, unit_suite: Path, tmp_path: Path
) -> None:
    import torch

    from gpfm.models import get_encoder_spec
    from gpfm.runtime import resolve_precision

    out = tmp_path / "run"
    kw = dict(device="cpu", weights={"gpfm": "random"}, only_tasks=["hard"], report=False)
    first = run_suite(unit_suite, ["gpfm"], out, precision=None, **kw)
    default = resolve_precision(None, torch.device("cpu"), half_ok=get_encoder_spec("gpfm").half_precision_ok)
    explicit = run_suite(unit_suite, ["gpfm"], out, precision=default, **kw)
    assert bench_registry["protocol_runs"] == 1 and explicit.rows[0].reused  # None == the resolved default
    other = "fp32" if default != "fp32" else "bf16"
    run_suite(unit_suite, ["gpfm"], out, precision=other, **kw)
    assert bench_registry["protocol_runs"] == 2
    assert (
        json.loads((out / first.rows[0].result_path).read_text())["provenance"]["precision_resolved"] == other
    )


def test_wrong_primary_metric_fails_clearly(bench_registry: Counter, tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ntasks:\n  - id: a\n    family: roi_classification\n    protocol: testonly.centroid\n"
        "    primary_metric: top5_accuracy\n    data: {kind: testonly_blobs}\n"
        "  - id: b\n    family: roi_classification\n    protocol: testonly.centroid\n"
        "    protocol_options: {nan: true}\n    data: {kind: testonly_blobs}\n"
    )
    table = run_suite(
        suite, ["gpfm"], tmp_path / "out", device="cpu", weights={"gpfm": "random"}, report=False
    )
    assert table.rows[0].status == "failed"
    assert table.rows[0].reason.startswith(
        "ValueError: primary metric 'top5_accuracy' is not among the metrics"
    )
    assert not list((tmp_path / "out" / "runs" / "a" / "testonly.centroid").glob("*.partial-*"))
    assert (
        table.rows[1].reason
        == "ValueError: primary metric 'balanced_accuracy' is nan (undefined on this test set)"
    )
