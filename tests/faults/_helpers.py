"""Helpers and fixtures of the fault suite: run the real ``gpfm`` entry point in-process, snapshot folders, bad files.

Every case asserts the exit code of the one CLI boundary (:func:`gpfm.cli.main`), that the message is one line
naming the file and the fix, and that nothing outside the job folder changed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "extract"))

from tiny_encoder import register  # noqa: E402

REPO = HERE.parents[1]
SHARED = Path(os.environ.get("GPFM_SHARED_DATA", REPO.parent / "shared" / "data"))
CMU = SHARED / "wsi" / "CMU-1-Small-Region.svs"
TCGA = SHARED / "wsi" / "TCGA-CR-7395-01A-01-TS1.svs"


@dataclass
class CliResult:
    """Exit code and captured output of one ``gpfm`` call."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The ``error: …`` lines on stderr."""
        return [line for line in self.err.splitlines() if line.startswith("error:")]


@pytest.fixture
def gpfm_cli(capsys, monkeypatch):
    """Call ``gpfm ARGS…`` through the real entry point (argv, error boundary, exit code) in this process."""
    from gpfm.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["gpfm", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, *must_contain: str) -> str:
    """The single ``error:`` line (no traceback on stderr), which names each of ``must_contain``."""
    assert "Traceback" not in result.err, result.err
    lines = result.error_lines
    assert len(lines) == 1, result.err
    for text in must_contain:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def snapshot(root: Path, exclude: Path | None = None) -> dict[str, str]:
    """Path → sha256 of every file under ``root`` (skipping ``exclude``): what must not change."""
    out = {}
    for path in sorted(root.rglob("*")):
        if exclude is not None and (path == exclude or exclude in path.parents):
            continue
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def tiny_encoder() -> str:
    """The tiny random test encoder (fast extraction)."""
    return register()


@pytest.fixture(scope="session")
def cmu() -> Path:
    """The real CMU-1-Small-Region slide (skips without shared data)."""
    if not CMU.is_file():
        pytest.skip(f"real data not available: {CMU}")
    return CMU


@pytest.fixture(scope="session")
def tcga() -> Path:
    """The real TCGA-CR-7395 slide (no mpp in its metadata; skips without shared data)."""
    if not TCGA.is_file():
        pytest.skip(f"real data not available: {TCGA}")
    return TCGA


def extract_args(tiny: str, out: Path, *slides: object) -> list[str]:
    """``gpfm extract`` arguments for the tiny encoder on CPU, in-process readers."""
    return ["extract", *map(str, slides), "--encoder", tiny, "--weights", "random", "--out", str(out),
            "--workers", "0", "--device", "cpu", "--precision", "fp32"]
