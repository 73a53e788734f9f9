"""What every ROI protocol shares: split checks, test scoring with bootstrap CIs, artifacts and provenance."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from gpfm.atomic import atomic_path, write_json_atomic
from gpfm.eval.data.roi import RoiFeatures, code_version
from gpfm.eval.data.splits import split_hash
from gpfm.eval.metrics import (
    bootstrap_classification,
    classification_metrics,
    confusion_matrix_artifact,
    roc_curves,
)
from gpfm.eval.protocol import Protocol, ProtocolResult


def check_roi_data(protocol: Protocol, data: Any, *, need_val: bool) -> RoiFeatures:
    """Type and split checks with one clear error line (never silently evaluate on the selection set)."""
    if not isinstance(data, RoiFeatures):
        raise TypeError(
            f"protocol {protocol.name} takes RoiFeatures (task kind roi_images); got {type(data).__name__}"
        )
    needed = ["train", "test"] + (["val"] if need_val else [])
    missing = [s for s in needed if not data.has(s)]
    if missing:
        hint = (
            "set split.val_size > 0"
            if missing == ["val"]
            else "give the task a split with train and test items"
        )
        raise ValueError(f"protocol {protocol.name} needs non-empty {', '.join(missing)} split(s); {hint}")
    return data


def write_predictions(
    path: Path, ids: np.ndarray, labels: np.ndarray, proba: np.ndarray, names: list[str]
) -> None:
    """The ``predictions`` artifact: id, label, prediction, p_<class> per test item (atomic)."""
    pred = proba.argmax(1)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "label", "prediction", *[f"p_{n}" for n in names]])
        for i in range(len(ids)):
            writer.writerow([ids[i], names[labels[i]], names[pred[i]], *[f"{p:.6g}" for p in proba[i]]])


def provenance(protocol: Protocol, data: RoiFeatures, **extra: Any) -> dict[str, Any]:
    """The data's provenance (encoder, weights sha, cache key, split hash) plus counts and code version."""
    prov = dict(data.provenance)
    prov.setdefault("code_version", code_version())
    prov["split_hash"] = split_hash(data.ids, data.split)  # of the split actually used, even if edited
    prov["split_counts"] = data.counts()
    prov["protocol_id"] = f"{protocol.name}@{protocol.version}"
    prov.update(extra)
    return prov


def classification_result(
    protocol: Protocol,
    data: RoiFeatures,
    out_dir: Path,
    *,
    task: str,
    encoder: str,
    proba: np.ndarray,
    extra_metrics: dict[str, float] | None = None,
    extra_provenance: dict[str, Any] | None = None,
    artifacts: dict[str, str] | None = None,
    flags: list[str] | None = None,
    bootstrap: bool = True,
) -> ProtocolResult:
    """Score test probabilities, write predictions/ROC/confusion artifacts and assemble the result.

    Args:
        protocol: the running protocol (name, version, config, primary metric).
        data: the task data; ``proba`` rows follow ``data.indices("test")``.
        out_dir: result folder (artifact paths are stored relative to it).
        task: task id.
        encoder: encoder name.
        proba: (N_test, K) class probabilities.
        extra_metrics: further metrics (e.g. other k values) merged into ``metrics``.
        extra_provenance: protocol-specific provenance (seeds, selected epoch, C...).
        artifacts: further artifacts already written.
        flags: warnings shown beside the number.
        bootstrap: compute the 1,000-resample stratified percentile CIs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test = data.indices("test")
    y = data.labels[test]
    metrics = classification_metrics(y, proba, data.label_names)
    metrics.update(extra_metrics or {})
    ci95: dict[str, tuple[float, float]] = {}
    n_skipped = {}
    if bootstrap:
        for name, ci in bootstrap_classification(y, proba).items():
            ci95[name] = ci.as_tuple()
            n_skipped[name] = ci.n_skipped
    write_predictions(out_dir / "predictions.csv", data.ids[test], y, proba, data.label_names)
    write_json_atomic(out_dir / "roc_curves.json", roc_curves(y, proba, data.label_names))
    write_json_atomic(
        out_dir / "confusion_matrix.json", confusion_matrix_artifact(y, proba.argmax(1), data.label_names)
    )
    all_artifacts = {
        "predictions": "predictions.csv",
        "roc_curves": "roc_curves.json",
        "confusion_matrix": "confusion_matrix.json",
        **(artifacts or {}),
    }
    extra = dict(extra_provenance or {})
    if bootstrap:
        extra["bootstrap"] = {
            "resamples": 1000,
            "seed": 0,
            "stratified": True,
            "interval": "percentile 2.5/97.5",
            "skipped": n_skipped,
        }
    flags = list(flags or [])
    if data.provenance.get("duplicate_groups_across_splits"):
        flags.append(
            f"{data.provenance['duplicate_groups_across_splits']} duplicate-image groups straddle the split"
        )
    return protocol.make_result(
        task=task,
        encoder=encoder,
        metrics=metrics,
        ci95=ci95,
        provenance=provenance(protocol, data, **extra),
        artifacts=all_artifacts,
        flags=flags,
    )
