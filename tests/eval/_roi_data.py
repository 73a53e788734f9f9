"""ROI test data builders shared by the ROI protocol tests (plain functions, not fixtures)."""

from __future__ import annotations

import numpy as np

from gpfm.eval.data.roi import RoiFeatures


def lc25000_roi(feats: dict[str, np.ndarray], test_size: float = 0.3, val_size: float = 0.1) -> RoiFeatures:
    """Real LC25000 EfficientNet-Lite0 features with a stratified split grouped by content SHA-256.

    LC25000 is rotations/flips of 250 source images per class, so near-duplicates still cross any split: the
    scores are a pipeline sanity check, not a benchmark number.
    """
    ids = np.array([p.split("lc25000_lung_224/")[-1] for p in feats["paths"]])
    return RoiFeatures.with_split(
        feats["features"],
        feats["labels"],
        list(feats["label_names"]),
        ids,
        groups=feats["sha256"],
        test_size=test_size,
        val_size=val_size,
        seed=0,
        provenance={"encoder": "efficientnet-lite0-imagenet"},
    )


def synthetic_roi(
    n_per_class: int = 40, k: int = 3, d: int = 16, sep: float = 2.0, seed: int = 0
) -> RoiFeatures:
    """Gaussian blobs with a stratified 60/20/20 split."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, (k, d))
    labels = np.repeat(np.arange(k), n_per_class)
    feats = centres[labels] + rng.normal(0, 1, (len(labels), d))
    ids = np.array([f"item{i:04d}" for i in range(len(labels))])
    return RoiFeatures.with_split(
        feats, labels, [f"c{i}" for i in range(k)], ids, test_size=0.2, val_size=0.2, seed=seed
    )
