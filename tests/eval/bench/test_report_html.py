"""The HTML report: self-contained, every section and artifact kind drawn, values escaped; CLI rebuild."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import SUITE_YAML, registered_test_protocols
from typer.testing import CliRunner

from gpfm.cli import app
from gpfm.eval.run.runner import run_suite


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of the unit suite with the report, shared by the tests of this module (read-only use)."""
    base = tmp_path_factory.mktemp("report")
    (base / "suite.yaml").write_text(SUITE_YAML)
    with registered_test_protocols():
        run_suite(
            base / "suite.yaml",
            ["gpfm", "resnet50-imagenet"],
            base / "run",
            device="cpu",
            weights={"gpfm": "random", "resnet50-imagenet": "random"},
        )
    return base / "run"


def test_coverage_and_published_numbers_beside_ours(finished_run: Path) -> None:
    import json

    text = (finished_run / "report.html").read_text()
    board = json.loads((finished_run / "leaderboard.json").read_text())
    ok_tasks = {r["task"] for r in json.loads((finished_run / "results.json").read_text())["rows"]
                if r["status"] == "ok" and r["headline"]}
    assert board["coverage"] == {"benchmark": "Made-up benchmark", "tasks": 9, "not_reproducible": 1,
                                 "reproducible": 6, "with_results": len(ok_tasks)}
    assert "nodata" not in ok_tasks and len(ok_tasks) == 5  # a task without data is not "covered"
    assert "Coverage of Made-up benchmark" in text and "a hospital cohort nobody else can get" in text
    got = re.search(r"published: gpfm 0\.5 \(ours ([0-9.]+), Δ ([+-][0-9.]+)\); uni 0\.75</p>", text)
    assert got is not None, "the published number and our difference are shown on the task"
    assert abs(float(got.group(1)) - 0.5 - float(got.group(2))) < 1e-4


def test_report_is_self_contained_and_complete(finished_run: Path) -> None:
    text = (finished_run / "report.html").read_text()
    # no network: every src/href is inline data or an in-page anchor, and a CSP forbids anything else
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert "Content-Security-Policy" in text and "<link" not in text
    for section in ("leaderboard", "families", "saturated", "references", "tasks", "problems", "provenance"):
        assert f'id="{section}"' in text
    # one figure per drawable artifact kind (ROC, confusion, curves for the two classification protocols of
    # 'easy' and for 'hard' and 'sat'; KM for 'surv') plus the rank chart and the rank grid
    assert text.count('<img class="plot"') == 2 + 3 * 4 + 1
    for title in (
        "ROC curves",
        "Confusion matrices",
        "Training curves",
        "Kaplan–Meier curves",
        "MIL attention",
        "VQA accuracy",
        "Generated vs reference",
    ):
        assert title in text
    assert "testonly.centroid@3" in text and "testonly.knn-faithful@1" in text
    assert (
        "Headline protocols: <code>testonly.centroid@3</code> (2 tasks), <code>testonly.survival@2</code>"
        in text
    )
    assert "val==test (faithful)" in text and '<span class="flag">saturated</span>' in text
    assert "data not found at" in text
    refs = text[text.index('id="references"') :]
    assert "made-up numbers for the report test" in refs and "<td class=num>2.96</td>" in refs
    # sample text is escaped, and only the first 5 of 7 samples per encoder are shown
    assert "&lt;b&gt;acinar&lt;/b&gt;" in text and "<b>acinar" not in text
    assert text.count("<td>s4</td>") == 2 and "<td>s5</td>" not in text


def test_attention_summary_numbers(finished_run: Path) -> None:
    # the test protocol writes slide-a = [.7, .1, .1, .1] and slide-b = uniform over 10 tiles
    p = np.array([0.7, 0.1, 0.1, 0.1])
    entropy = np.mean([-(p * np.log(p)).sum() / np.log(4), 1.0])
    top10 = np.mean([0.7, 0.1])  # ceil(10% of n) tiles: 1 tile in both slides
    text = (finished_run / "report.html").read_text()
    row = re.search(
        r"<tr><td>gpfm</td><td class=num>2</td><td class=num>7</td>"
        r"<td class=num>([0-9.]+)</td><td class=num>([0-9.]+)</td></tr>",
        text,
    )
    assert row is not None
    assert float(row.group(1)) == pytest.approx(entropy, abs=5e-4)
    assert float(row.group(2)) == pytest.approx(top10, abs=5e-4)


def test_leaderboard_order_in_html(finished_run: Path) -> None:
    text = (finished_run / "report.html").read_text()
    board = text[text.index('id="leaderboard"') : text.index('id="families"')]
    first = re.search(r'<tr class="best"><td>1</td><td>([^<]+)</td><td class=num>([0-9.]+)</td>', board)
    import json

    entries = json.loads((finished_run / "leaderboard.json").read_text())["overall"]["entries"]
    assert first.group(1) == entries[0]["encoder"]
    assert float(first.group(2)) == pytest.approx(entries[0]["average_rank"], abs=0.005)


def test_cli_bench_report_rebuilds(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "rebuilt.html"
    result = CliRunner().invoke(app, ["bench-report", str(finished_run), "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip()) == target
    assert target.read_text().count('<img class="plot"') == (finished_run / "report.html").read_text().count(
        '<img class="plot"'
    )
    missing = CliRunner().invoke(app, ["bench-report", str(finished_run / "nope")])
    assert missing.exit_code == 2 and "no results table here" in missing.output


def test_cli_bench_runs_and_reports(bench_registry: Counter, unit_suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = [
        "bench",
        str(unit_suite),
        "--encoders",
        "gpfm,resnet50-imagenet",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--weights",
        "gpfm=random",
        "--weights",
        "resnet50-imagenet=random",
        "--tasks",
        "easy,hard",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6/6 runs ok" in result.output and (out / "report.html").is_file()
    again = CliRunner().invoke(app, args)
    assert again.output.count("(reused)") == 6
    bad = CliRunner().invoke(
        app, ["bench", str(unit_suite), "--encoders", "gpfm", "--out", str(out), "--tasks", "nope"]
    )
    assert bad.exit_code == 2 and "no task 'nope'" in bad.output
