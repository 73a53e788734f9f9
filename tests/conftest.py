"""Shared fixtures: the real third-party data in ../shared/data (skipped when absent) and real features."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GPFM_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped when it does not exist."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data (skips the test when absent)."""
    return shared_path()


@pytest.fixture(scope="session")
def lc25000_dir() -> Path:
    """The LC25000 lung patches folder (3 classes x 300 real 224 px H&E patches)."""
    return shared_path("patches", "lc25000_lung_224")


@pytest.fixture(scope="session")
def lc25000_table(lc25000_dir: Path) -> list[dict[str, str]]:
    """Rows of labels.csv: file, label, size, sha256, source path."""
    with open(lc25000_dir / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def lc25000_features(lc25000_dir: Path, lc25000_table) -> dict[str, np.ndarray]:
    """Real EfficientNet-Lite0 ImageNet features of all 900 LC25000 patches (cached between local runs).

    Returns a dict with ``features`` (900, 1280) float32, ``labels`` (900,) int, ``label_names``,
    ``paths`` and ``sha256`` (for duplicate-aware splits).
    """
    from PIL import Image

    from gpfm.models import create_encoder

    names = sorted({r["label"] for r in lc25000_table})
    rows = sorted(lc25000_table, key=lambda r: r["file"])
    # our own cache folder (not pytest's cache plugin, which may be disabled with -p no:cacheprovider)
    cache_dir = Path(os.environ.get("GPFM_TEST_CACHE", Path(__file__).resolve().parents[1] / ".cache" / "tests"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / "lc25000_effnet_lite0_fp32.npz"
    paths = [str(lc25000_dir / r["file"]) for r in rows]
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        feats = data["features"]
    else:
        enc = create_encoder("efficientnet-lite0-imagenet", device="cpu", precision="fp32", verbose=False)
        out = []
        for i in range(0, len(paths), 64):
            batch = torch.stack([enc.transform(Image.open(p)) for p in paths[i : i + 64]])
            out.append(enc.embed(batch).numpy())
        feats = np.concatenate(out).astype(np.float32)
        from gpfm.atomic import atomic_path

        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, features=feats)
    return {
        "features": feats,
        "labels": np.array([names.index(r["label"]) for r in rows]),
        "label_names": np.array(names),
        "paths": np.array(paths),
        "sha256": np.array([r["sha256"] for r in rows]),
    }
