"""The suites shipped with gpfm parse without any data, match the spec task list, name real components."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gpfm.eval.protocol import PROTOCOLS, TASK_LOADERS, create_protocol
from gpfm.eval.suite import list_shipped_suites, load_suite, missing_data_paths, resolve_data_paths

# GPFM arXiv v1 public subset (benchmark-protocols.md §9.2)
PUBLIC_COUNTS = {
    "wsi_classification": 12,
    "survival": 12,
    "roi_classification": 12,
    "roi_retrieval": 1,
    "vqa": 1,
    "report_generation": 1,
}
PUBLIC_EXTERNAL = {
    "ubc-ocean",
    "ebrains",
    "cptac-luad-survival",
    "unitopatho",
    "chaoyang",
    "breakhis",
    "pathvqa",
}


# GPFM NBME, 72 tasks (benchmark-protocols.md §9.1): per family, and how many of them are public
NBME_COUNTS = {"wsi_classification": 40, "survival": 14, "roi_classification": 13, "roi_retrieval": 1, "vqa": 2,
               "report_generation": 2}
NBME_PUBLIC_WSI = {"tcga-nsclc", "cptac-nsclc", "tcga-rcc", "camelyon", "tcga-brca-subtyping", "bracs-3", "bracs-7",
                   "panda", "tcga-luad-tp53", "tcga-gbmlgg-idh1", "ubc-ocean", "tcga-gbmlgg", "imp-crs",
                   "tcga-stad-lauren", "ebrains-idh1", "ebrains-subtyping", "hancock"}
NBME_NEW = {"tcga-gbmlgg", "tcga-stad-lauren", "ebrains-subtyping", "imp-crs", "hancock", "tcga-hnsc-survival",
            "tcga-gbm-survival", "tcga-lgg-survival", "gashisdb", "wsi-vqa", "patchgastric-report"}


def test_shipped_suites_listed() -> None:
    assert {"gpfm_public", "gpfm_nbme", "lc25000_demo"} <= set(list_shipped_suites())


def test_gpfm_nbme_lists_all_72_tasks(tmp_path: Path) -> None:
    suite = load_suite("gpfm_nbme", data_root=tmp_path, environ={})
    families = Counter(t.family for t in suite.tasks) + Counter(p["family"] for p in suite.not_reproducible)
    assert dict(families) == NBME_COUNTS and sum(families.values()) == suite.paper["tasks"] == 72
    assert len(suite.tasks) == 49 and len(suite.not_reproducible) == 23
    assert {t.id for t in suite.tasks if t.family == "wsi_classification"} == NBME_PUBLIC_WSI
    assert NBME_NEW <= {t.id for t in suite.tasks}
    assert all(p["id"].startswith(("center-", "gc-")) for p in suite.not_reproducible)
    for task in suite.tasks:  # every runnable task says where its data comes from and how to put it in place
        assert task.source and task.obtain and "${" not in task.obtain, task.id
    # every slide-feature folder a task reads is a cohort that `bench --extract` can fill
    features = {str(v) for t in suite.tasks for k, v in t.data.options.items() if k in ("features", "features_dir")}
    assert features == {c["features"] for c in suite.cohorts_for().values()} == {
        c["features"] for c in suite.cohorts.values()}
    assert set(suite.references["average_rank"]) == {
        "gpfm", "uni", "prov-gigapath", "phikon", "conch", "ctranspath", "chief", "plip", "resnet50-imagenet"}
    from gpfm.models import PAPER_COMPARISON

    assert set(suite.references["average_score"]) == set(PAPER_COMPARISON)  # every model of the table runs


def test_gpfm_public_parses_without_data(tmp_path: Path) -> None:
    suite = load_suite("gpfm_public", data_root=tmp_path, environ={})
    assert len(suite.tasks) == 39
    assert Counter(t.family for t in suite.tasks) == PUBLIC_COUNTS
    assert {t.id for t in suite.tasks if t.subgroup == "external"} == PUBLIC_EXTERNAL
    assert {t.id for t in suite.tasks if t.saturated} == {"camelyon", "tcga-nsclc"}
    assert all(
        t.headline_protocol == "roi.linear.gpfm" for t in suite.tasks if t.family == "roi_classification"
    )
    assert not any(
        t.headline_protocol.endswith("-faithful") for t in suite.tasks
    )  # never a headline (spec §4)
    for task in suite.tasks:
        block = resolve_data_paths(task.data, suite.base_dir)
        missing = missing_data_paths(block, encoder="gpfm")
        assert missing and all(m.startswith(str(tmp_path)) for m in missing), task.id  # under the data root
    # ${GPFM_DATA} from the environment relocates everything
    moved = load_suite("gpfm_public", data_root=tmp_path, environ={"GPFM_DATA": "/datasets"})
    assert moved.task("bach").data.options["root"] == "/datasets/roi/BACH"


@pytest.mark.parametrize("name", ["gpfm_public", "gpfm_nbme", "lc25000_demo", "robustness_demo"])
def test_named_protocols_and_loaders_are_registered(name: str, tmp_path: Path) -> None:
    """Every protocol and data kind a shipped suite names exists, and its options are accepted."""
    from gpfm.eval.protocol import PROTOCOLS

    PROTOCOLS.names()  # discover every family first

    suite = load_suite(name, data_root=tmp_path, environ={})
    assert suite.unregistered() == {"protocols": [], "data_kinds": []}
    assert set(suite.data_kinds()) <= set(TASK_LOADERS) and set(suite.protocol_names()) <= set(PROTOCOLS)
    for task in suite.tasks:
        for protocol in task.protocols:
            proto = create_protocol(protocol, **task.protocol_options.get(protocol, {}))  # options accepted
            assert proto.family == task.family, (task.id, protocol)


def test_bench_check_reports_missing_and_ready(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gpfm.cli import app
    from gpfm.eval.suite.check import check_suite

    bach = tmp_path / "roi" / "BACH"
    bach.mkdir(parents=True)
    (bach / "labels.csv").write_text("path,label,split\n")
    checks = {c.task: c for c in check_suite("gpfm_public", ["gpfm", "uni"], data_root=tmp_path)}
    assert not any(c.errors for c in checks.values())
    assert checks["bach"].ready and not checks["pcam"].ready
    assert checks["camelyon"].missing["uni"] == [
        str(tmp_path / "wsi" / "CAMELYON16.csv"),
        str(tmp_path / "features" / "CAMELYON16" / "uni"),
    ]
    result = CliRunner().invoke(app, ["bench-check", "gpfm_public", "--data-root", str(tmp_path)])
    assert result.exit_code == 0 and "1/39 task(s) ready" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: b\ntasks:\n  - id: t\n    family: roi_classification\n    protocol: roi.knn.cl2n\n"
        "    protocol_options: {k: 5, kk: 1}\n    data: {kind: roi_images, root: x}\n"
    )
    result = CliRunner().invoke(app, ["bench-check", str(bad)])
    assert result.exit_code == 1 and "unknown option(s) kk" in result.output
