"""The suite stage: the YAML schema (``schema``), data blocks and paths (``data``), and ``check`` (bench-check)."""

from gpfm.eval.suite.data import (
    DataSpec,
    SuiteError,
    expand_variables,
    is_path_key,
    missing_data_paths,
    resolve_data_paths,
)
from gpfm.eval.suite.schema import (
    Suite,
    SuiteDefaults,
    TaskSpec,
    list_shipped_suites,
    load_suite,
    parse_suite,
    shipped_suite_path,
)

__all__ = [
    "DataSpec",
    "Suite",
    "SuiteDefaults",
    "SuiteError",
    "TaskSpec",
    "expand_variables",
    "is_path_key",
    "list_shipped_suites",
    "load_suite",
    "missing_data_paths",
    "parse_suite",
    "resolve_data_paths",
    "shipped_suite_path",
]
