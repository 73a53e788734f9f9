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


def test_shipped_suites_listed() -> None:
    assert {"gpfm_public", "lc25000_demo"} <= set(list_shipped_suites())


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


@pytest.mark.parametrize("name", ["gpfm_public", "lc25000_demo"])
def test_named_protocols_and_loaders_are_registered(name: str, tmp_path: Path) -> None:
    """Every protocol and data kind a shipped suite names exists, and its options are accepted."""
    import gpfm.eval.protocols  # noqa: F401  (registers everything)

    suite = load_suite(name, data_root=tmp_path, environ={})
    assert suite.unregistered() == {"protocols": [], "data_kinds": []}
    assert set(suite.data_kinds()) <= set(TASK_LOADERS) and set(suite.protocol_names()) <= set(PROTOCOLS)
    for task in suite.tasks:
        for protocol in task.protocols:
            proto = create_protocol(protocol, **task.protocol_options.get(protocol, {}))  # options accepted
            assert proto.family == task.family, (task.id, protocol)
