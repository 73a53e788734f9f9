"""Open the HTML report in headless Chromium: it renders its tables and plots, with no console errors.

Two signals are read: the report's own self-check (``<body data-report-check=...>``, set on ``load`` from the
error events it captured and the images that failed to decode), read back with ``--dump-dom``; and every
console message Chromium logs to stderr (``--enable-logging=stderr``: uncaught exceptions, CSP violations
from any attempted network fetch). A deliberately broken copy of the page proves both signals can fail.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import SUITE_YAML, registered_test_protocols
from PIL import Image

from gpfm.eval.run.runner import run_suite
from tests.browser_pipe import CHROMIUM, HEADLESS_FLAGS, console_messages

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="headless Chromium not installed (Debian package 'chromium')"
    ),
]


@dataclass
class BrowserCheck:
    """What the browser saw: the page's self-check, console messages and the screenshot."""

    check: dict
    console: list[str]
    screenshot: Path


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, *HEADLESS_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def render(page: Path, workdir: Path) -> BrowserCheck:
    """Load ``page`` in headless Chromium twice: a DOM dump with console logging, then a screenshot."""
    url = page.resolve().as_uri()
    dom = _chromium(
        ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", url],
        workdir / "profile-dom",
    )
    marker = re.search(r'data-report-check="([^"]*)"', dom.stdout)
    check = (
        json.loads(html.unescape(marker.group(1))) if marker else {"ok": False, "errors": ["no self-check"]}
    )
    console = console_messages(dom.stderr)
    shot = workdir / f"{page.stem}.png"
    _chromium(
        [f"--screenshot={shot}", "--window-size=1400,3000", "--hide-scrollbars", url],
        workdir / "profile-shot",
    )
    return BrowserCheck(check, console, shot)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("browser")
    (base / "suite.yaml").write_text(SUITE_YAML)
    with registered_test_protocols():
        run_suite(
            base / "suite.yaml",
            ["gpfm", "resnet50-imagenet"],
            base / "run",
            device="cpu",
            weights={"gpfm": "random", "resnet50-imagenet": "random"},
        )
    return base / "run" / "report.html"


def test_report_renders_without_errors(report_page: Path, tmp_path: Path) -> None:
    seen = render(report_page, tmp_path)
    text = report_page.read_text()
    assert seen.console == [], seen.console
    assert seen.check["ok"] and seen.check["errors"] == [] and seen.check["broken_images"] == 0
    assert seen.check["images"] == text.count('<img class="plot"') >= 10  # every plot decoded
    assert seen.check["tables"] == text.count("<table>") >= 8
    image = Image.open(seen.screenshot)
    assert image.size == (1400, 3000)
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 20  # not a blank page: text, tables and plots are drawn
    print(f"screenshot: {seen.screenshot}")


def test_checker_catches_errors(report_page: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        report_page.read_text().replace(
            "<body>",
            '<body><script>throw new Error("boom")</script><img src="data:image/png;base64,AAAA">'
            '<img src="https://example.invalid/x.png">',
            1,
        )
    )
    seen = render(broken, tmp_path)
    assert not seen.check["ok"] and seen.check["broken_images"] == 2
    assert "Uncaught Error: boom" in seen.check["errors"]
    assert any("boom" in m for m in seen.console)
    assert any("Content Security Policy" in m for m in seen.console)  # the network fetch was blocked
