"""In-training frozen-feature probe of the EMA teacher on a fixed labelled ROI set.

The set is a folder with ``labels.csv`` (columns ``file``, ``label`` and optionally ``sha256``), e.g. the
LC25000 patches of ``../shared/data``. It is loaded once (whole tiles resized to the global-crop size,
ImageNet
normalisation), split 50/50 stratified by class without splitting SHA-256 groups (scikit-learn's
``StratifiedGroupKFold``), and at every probe the teacher's CLS features are scored with scikit-learn by

* kNN: cosine distance, k = 20 nearest training features, majority vote (ties → smallest label);
* linear: standardised features → logistic regression (C = 1), accuracy on the held-out half.

Pretraining depends on no part of the benchmark (:mod:`gpfm.eval`); both use scikit-learn for these probes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class ProbeSet:
    """A fixed labelled ROI set.

    Attributes:
        images: (N, 3, S, S) normalised tiles.
        labels: (N,) integer labels.
        is_train: (N,) bool, the probe-train half.
    """

    images: torch.Tensor
    labels: np.ndarray
    is_train: np.ndarray


def load_probe_set(root: str | Path, size: int, max_images: int = 2000, seed: int = 0) -> ProbeSet:
    """Read ``<root>/labels.csv`` and its images (at most ``max_images``, chosen with ``seed``).

    Raises:
        ValueError: no labels.csv, or fewer than two classes.
    """
    from PIL import Image
    from sklearn.model_selection import StratifiedGroupKFold

    from gpfm.models.spec import Preprocess
    from gpfm.models.transforms import PilTransform

    root = Path(root)
    table = root / "labels.csv"
    if not table.is_file():
        raise ValueError(f"train.probe_root={root}: no labels.csv (columns file,label[,sha256]) found")
    with open(table, newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["file"])
    if len(rows) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_images, replace=False))
        rows = [rows[i] for i in keep]
    names = sorted({r["label"] for r in rows})
    if len(names) < 2:
        raise ValueError(f"{table}: the probe needs at least two classes, found {names}")
    labels = np.array([names.index(r["label"]) for r in rows])
    groups = np.array([r.get("sha256") or r["file"] for r in rows])
    # half of the SHA-256 groups per class for training: the first of two stratified group folds
    folds = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed)
    train_rows, _ = next(folds.split(np.zeros(len(labels)), labels, groups))
    is_train = np.zeros(len(labels), dtype=bool)
    is_train[train_rows] = True
    tf = PilTransform(Preprocess(input_size=size))
    images = torch.stack([tf(Image.open(root / r["file"]).convert("RGB")) for r in rows])
    return ProbeSet(images, labels, is_train)


@torch.no_grad()
def probe_backbone(
    backbone: torch.nn.Module, probe: ProbeSet, device: torch.device, k: int = 20, batch: int = 128
) -> dict[str, float]:
    """KNN and linear-probe accuracy of ``backbone``'s final-norm CLS on the held-out half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    was_training = backbone.training
    backbone.eval()
    feats = torch.cat(
        [
            backbone.forward_tokens(probe.images[i : i + batch].to(device))[:, 0].float().cpu()
            for i in range(0, len(probe.images), batch)
        ]
    )
    backbone.train(was_training)
    tr, te = probe.is_train, ~probe.is_train
    y_tr, y_te = probe.labels[tr], probe.labels[te]
    neighbours = KNeighborsClassifier(n_neighbors=min(k, int(tr.sum())), metric="cosine", algorithm="brute")
    knn = float((neighbours.fit(feats[tr].numpy(), y_tr).predict(feats[te].numpy()) == y_te).mean())
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(feats[tr].numpy(), y_tr)
    linear = float((clf.predict(feats[te].numpy()) == y_te).mean())
    return {"probe/knn_acc": knn, "probe/linear_acc": linear}
