"""Metrics with pinned definitions: one small module per metric family.

``classification`` (balanced accuracy, macro AUROC, F1, quadratic κ, ROC curves), ``bootstrap`` (seeded
percentile CIs, mean ± sd over runs) and ``retrieval`` (neighbour search, acc@k / mv@k / mAP@k, GPFM
rank-weighted scores). Survival metrics live in ``gpfm.eval.metrics.survival``.
"""

from gpfm.eval.metrics.bootstrap import (
    BootstrapCI,
    RunSummary,
    bootstrap_classification,
    bootstrap_statistic,
    resample_weights,
    summarize_run_dicts,
    summarize_runs,
)
from gpfm.eval.metrics.classification import (
    CLASSIFICATION_METRICS,
    binary_auroc,
    classification_metrics,
    confusion_counts,
    confusion_matrix_artifact,
    macro_auroc,
    metrics_from_confusion,
    roc_curves,
)

__all__ = [
    "CLASSIFICATION_METRICS",
    "BootstrapCI",
    "RunSummary",
    "binary_auroc",
    "bootstrap_classification",
    "bootstrap_statistic",
    "classification_metrics",
    "confusion_counts",
    "confusion_matrix_artifact",
    "macro_auroc",
    "metrics_from_confusion",
    "resample_weights",
    "roc_curves",
    "summarize_run_dicts",
    "summarize_runs",
]
