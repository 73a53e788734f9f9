"""Fixtures of the benchmark-runner tests (defined in bench_fixtures.py, importable by the test modules)."""

from bench_fixtures import bench_registry, unit_suite  # noqa: F401  (pytest fixtures)
