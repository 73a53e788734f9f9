"""Benchmark suites shipped with gpfm (YAML) and the splits gpfm generated for them (``splits/``)."""
