"""Suite YAML parsing: typed tasks, option merging, ${VAR} expansion, path resolution, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpfm.eval.suite import SuiteError, load_suite, missing_data_paths, resolve_data_paths


def test_parse_unit_suite(unit_suite: Path, tmp_path: Path) -> None:
    suite = load_suite(unit_suite, environ={})
    assert suite.name == "unit-suite" and suite.base_dir == tmp_path.resolve()
    assert [t.id for t in suite.tasks] == ["easy", "hard", "surv", "sat", "vqa", "nodata"]
    easy = suite.task("easy")
    assert easy.protocols == ("testonly.centroid", "testonly.knn-faithful")
    assert easy.headline_protocol == "testonly.centroid"
    # defaults.protocol_options apply per protocol name; task options keyed by protocol name apply to it only
    assert easy.protocol_options == {"testonly.centroid": {"shrink": 0.0}, "testonly.knn-faithful": {"k": 3}}
    assert easy.data.kind == "testonly_blobs" and easy.data.options["seed"] == "0"  # ${BLOBS_SEED} default
    assert suite.task("hard").group == "roi_classification/external"
    assert suite.task("sat").saturated and not easy.saturated
    assert suite.task("nodata").data.options["root"] == f"{tmp_path.resolve()}/not-downloaded-yet"
    assert suite.protocol_names() == [
        "testonly.centroid",
        "testonly.knn-faithful",
        "testonly.survival",
        "testonly.text",
    ]


def test_environment_and_data_root(unit_suite: Path, tmp_path: Path) -> None:
    root = tmp_path / "elsewhere"
    suite = load_suite(unit_suite, data_root=root, environ={"BLOBS_SEED": "7", "DATA_ROOT": "/ignored"})
    assert suite.task("easy").data.options["seed"] == "7"  # the environment beats the declared default
    assert suite.base_dir == root.resolve()
    assert (
        suite.task("nodata").data.options["root"] == f"{root.resolve()}/not-downloaded-yet"
    )  # DATA_ROOT reserved


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


_TASK = "  - id: t1\n    family: roi_classification\n    protocol: p\n    data: {kind: roi_images, root: x}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: s\ntasks:\n" + _TASK + "    protocl_options: {}\n",
            r"tasks\[0\] \(id=t1\): unknown key\(s\) 'protocl_options' \(did you mean 'protocol_options'\?\)",
        ),
        ("name: s\nfoo: 1\ntasks:\n" + _TASK, r"unknown key\(s\) 'foo'"),
        (
            "name: s\ntasks:\n  - id: t1\n    family: roi_classification\n    protocol: p\n"
            "    data: {root: x}\n",
            r"tasks\[0\] \(id=t1\)\.data: missing 'kind'",
        ),
        (
            "name: s\ntasks:\n  - id: t1\n    family: roi_classification\n    protocol: p\n",
            r"\(id=t1\): missing 'data' block",
        ),
        (
            "name: s\ntasks:\n  - id: t1\n    family: roi\n    protocol: p\n    data: {kind: k}\n",
            r"'family' must be one of .*roi_classification",
        ),
        ("name: s\ntasks:\n" + _TASK + _TASK, r"task id 't1' appears twice"),
        (
            "name: s\ntasks:\n  - id: t1\n    family: survival\n    protocol: []\n    data: {kind: k}\n",
            r"'protocol' must be a protocol name or a non-empty list",
        ),
        (
            "name: s\ntasks:\n  - id: t1\n    family: survival\n    protocol: p\n"
            "    data: {kind: k, root: '${NOPE}'}\n",
            r"undefined variable \$\{NOPE\}",
        ),
        ("name: s\ndefaults: {batch_size: 0}\ntasks:\n" + _TASK, r"batch_size: expected a positive integer"),
        ("name: s\ntasks:\n" + _TASK + "    saturated: maybe\n", r"'saturated' must be true or false"),
        ("name: s\nvariables: {DATA_ROOT: /x}\ntasks:\n" + _TASK, r"DATA_ROOT is built in"),
        ("name: s\ntasks: [\n", r"not valid YAML"),
        ("tasks:\n" + _TASK, r"missing 'name'"),
        ("name: s\nnot_reproducible:\n  - {id: t1, family: vqa, reason: private}\ntasks:\n" + _TASK,
         r"'t1' is also a runnable task"),
        ("name: s\nnot_reproducible:\n  - {id: c1, family: vqa}\ntasks:\n" + _TASK, r"not_reproducible\[0\]: missing 'reason'"),
        ("name: s\ncohorts: {A: {slides: /s, features: /f}}\ntasks:\n" + _TASK, r"cohorts\.A\.features: must contain"),
        ("name: s\ncohorts: {A: {features: '/f/{encoder}'}}\ntasks:\n" + _TASK, r"cohorts\.A: missing 'slides'"),
        ("name: s\ntasks:\n" + _TASK + "    reference: {gpfm: high}\n", r"reference\.gpfm: must be a number"),
    ],
)
def test_errors_are_clear(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SuiteError, match=expected) as info:
        load_suite(path, environ={})
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_fallback_variable_and_missing_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: s\ntasks:\n  - id: t\n    family: vqa\n    protocol: p\n"
        "    data: {kind: k, root: '${GPFM_DATA:-~/gpfm}/PathVQA'}\n",
    )
    suite = load_suite(path, environ={})
    assert suite.tasks[0].data.options["root"] == str(Path("~/gpfm/PathVQA").expanduser())
    with pytest.raises(SuiteError, match="suite file not found"):
        load_suite(tmp_path / "absent.yaml")
    with pytest.raises(SuiteError, match="no task 'zz'"):
        suite.select(["zz"])


def test_resolve_and_check_data_paths(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "labels.csv").write_text("file,label\n")
    path = _write(
        tmp_path,
        "name: s\ntasks:\n  - id: t\n    family: roi_classification\n    protocol: p\n"
        "    data: {kind: k, root: imgs, csv: labels.csv, split_csv: splits.csv, n: 3}\n",
    )
    task = load_suite(path, environ={}).tasks[0]
    block = resolve_data_paths(task.data, tmp_path)
    assert block["root"] == str(tmp_path / "imgs")
    assert block["csv"] == str(tmp_path / "imgs" / "labels.csv")  # found inside root
    assert block["split_csv"] == str(tmp_path / "splits.csv")  # not in root: relative to the base folder
    assert block["n"] == 3 and block["kind"] == "k"
    assert missing_data_paths(block) == [str(tmp_path / "splits.csv")]


def test_shipped_suite_by_name() -> None:
    suite = load_suite("lc25000_demo", environ={})
    assert suite.path.name == "lc25000_demo.yaml" and suite.tasks
