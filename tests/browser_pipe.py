"""Drive headless Chromium over its DevTools pipe (stdlib only) and wait, in real time, for a page's self-check.

``--dump-dom`` with ``--virtual-time-budget`` dumps after a budget of *virtual* time, which does not wait for
image decoding or animation frames: a page that draws from decoded tiles (the OpenSeadragon viewer) was dumped
before its first tile in about a third of the runs, loaded machine or not. Here the page is asked for its state
until a condition holds or a real-time deadline passes, so the check fails only when the page never gets there.

Protocol: ``--remote-debugging-pipe`` reads NUL-terminated JSON commands on fd 3 and writes replies and events on
fd 4 (the transport Puppeteer uses).
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the headless Chromium (Debian package ``chromium``) the browser tests use, or None (they skip)
CHROMIUM = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
#: flags of every headless run: no sandbox (containers), no GPU, and nothing that reaches the network
HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
_CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)$")


def console_messages(stderr: str) -> list[str]:
    """The page's console messages in Chromium's ``--enable-logging=stderr`` output."""
    return [m.group(1) for line in stderr.splitlines() if (m := _CONSOLE.search(line))]


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int):
        self._w, self._r, self._buf, self._next = write_fd, read_fd, b"", 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)


def wait_for_page(chromium: str, url: str, profile: Path, expression: str, done: Callable[[Any], bool], *,
                  timeout: float = 60.0, poll: float = 0.25, settle: float = 0.0, screenshot: Path | None = None,
                  window: tuple[int, int] = (1400, 900)) -> tuple[Any, list[str]]:
    """Open ``url`` in a ``window``-sized page, evaluate ``expression`` (JSON-returnable) every ``poll`` s until
    ``done(value)`` and then until the value stays the same for ``settle`` s, or until ``timeout`` s of real time
    have passed; save a PNG ``screenshot`` of that moment if asked. Returns the last value and the console
    messages Chromium logged."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    log = profile.with_suffix(".log")
    profile.mkdir(parents=True, exist_ok=True)

    def child_fds() -> None:  # Chromium reads commands on fd 3 and writes on fd 4
        read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)  # copies first: either may be 3 or 4
        os.dup2(read_end, 3)  # dup2 makes 3 and 4 inheritable; every other pipe end is close-on-exec
        os.dup2(write_end, 4)

    with open(log, "w") as err:
        proc = subprocess.Popen(
            [chromium, *HEADLESS_FLAGS, "--enable-logging=stderr", "--v=0", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=child_fds,
            close_fds=False)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    value: Any = None
    try:
        pipe = _Pipe(to_chrome_w, from_chrome_r)
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        pipe.call("Emulation.setDeviceMetricsOverride", {"width": window[0], "height": window[1],
                                                         "deviceScaleFactor": 1, "mobile": False}, session)
        pipe.call("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + timeout
        stable_since: float | None = None
        while time.monotonic() <= deadline:
            res = pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
            new_value = res.get("result", {}).get("value")
            if stable_since is None or new_value != value:
                stable_since = time.monotonic()
            value = new_value
            if done(value) and time.monotonic() - stable_since >= settle:
                break
            time.sleep(poll)
        if screenshot is not None:
            shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        try:
            pipe.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError):
            pass
    finally:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_chrome_w)
        os.close(from_chrome_r)
    return value, console_messages(log.read_text(errors="replace"))
