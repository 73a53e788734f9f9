"""Fixtures of the extraction tests: the tiny test encoder and the real slides."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_encoder import register  # noqa: E402


@pytest.fixture(scope="session")
def tiny_encoder() -> str:
    """Name of the registered tiny random encoder."""
    return register()
