"""Fixtures of the extraction tests: the tiny test encoder, the real slides and folders of slide links."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_encoder import register  # noqa: E402

HERE = Path(__file__).parent
REPO = HERE.parents[1]
SHARED_WSI = Path(os.environ.get("GPFM_SHARED_DATA", REPO.parent / "shared" / "data")) / "wsi"
CMU = SHARED_WSI / "CMU-1-Small-Region.svs"
TCGA = SHARED_WSI / "TCGA-CR-7395-01A-01-TS1.svs"


@pytest.fixture(scope="session")
def tiny_encoder() -> str:
    """Name of the registered tiny random encoder."""
    return register()


@pytest.fixture(scope="session")
def cmu() -> Path:
    """CMU-1-Small-Region.svs (real, 0.499 µm/px, one level); skips when the shared data is absent."""
    if not CMU.is_file():
        pytest.skip(f"real data not available: {CMU}")
    return CMU


@pytest.fixture(scope="session")
def tcga() -> Path:
    """TCGA-CR-7395 (real, two levels, JPEG 2000, no mpp); skips when absent."""
    if not TCGA.is_file():
        pytest.skip(f"real data not available: {TCGA}")
    return TCGA


def link_slides(folder: Path, source: Path, names: list[str]) -> list[Path]:
    """Symlinks ``folder/<name>.svs`` → ``source`` (distinct slide ids over one real slide)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        link = folder / f"{name}.svs"
        link.symlink_to(source)
        out.append(link)
    return out


def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes: src/ and this folder importable, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def h5_payload(path: Path) -> dict[str, np.ndarray]:
    """features, coords and tile_status of a features file (what must be identical across runs)."""
    from gpfm.wsi import read_features

    data = read_features(path)
    return {"features": data["features"], "coords": data["coords"], "tile_status": data["tile_status"]}
