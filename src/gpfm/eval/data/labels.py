"""Refuse tasks that cannot give a meaningful score: missing labels and fewer than two classes in a split.

A one-class task scores a perfect balanced accuracy and a NaN-labelled row becomes an extra class; either would
be ranked like a real result. So a loader checks its labels here, and the task becomes a recorded failure with
a one-line reason instead — unless the suite says ``missing_labels: drop``, in which case the rows without a
label are dropped and their count is recorded in the result's provenance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gpfm.errors import GpfmError

#: Cell values that mean "no label" in hand-made and exported tables (GDC exports write ``'--``).
MISSING_LABEL_TOKENS = frozenset({"", "nan", "na", "n/a", "none", "null", "--", "'--", "?"})
MISSING_LABEL_POLICIES = ("error", "drop")


class DegenerateTaskError(GpfmError, ValueError):
    """The task's labels cannot give a meaningful score (missing labels, fewer than two classes in a split)."""


def is_missing_label(value: Any) -> bool:
    """True for None, NaN and the tokens of :data:`MISSING_LABEL_TOKENS` (case-insensitive)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip().lower() in MISSING_LABEL_TOKENS


def missing_label_rows(values: Iterable[Any]) -> list[int]:
    """Positions of the values that are missing labels."""
    return [i for i, v in enumerate(values) if is_missing_label(v)]


def handle_missing_labels(values: Sequence[Any], policy: str, where: str, first_line: int = 2) -> np.ndarray:
    """Rows to keep under the ``missing_labels`` policy.

    Args:
        values: the label cells, in file order.
        policy: ``error`` (default: any missing label fails the task) or ``drop``.
        where: the label file (named in the message).
        first_line: file line number of ``values[0]`` (2 for a CSV with a header).

    Returns:
        Boolean keep-mask over ``values``.

    Raises:
        DegenerateTaskError: missing labels under ``error``, or an unknown policy.
    """
    if policy not in MISSING_LABEL_POLICIES:
        raise DegenerateTaskError(f"{where}: missing_labels {policy!r} unknown; use error or drop")
    missing = missing_label_rows(values)
    if missing and policy == "error":
        raise DegenerateTaskError(
            f"{where}:{missing[0] + first_line}: {len(missing)} row(s) have no label (empty/NaN); fill them, or "
            "set missing_labels: drop in the task's data block to leave them out"
        )
    keep = np.ones(len(values), dtype=bool)
    keep[missing] = False
    return keep


def check_two_classes(labels: np.ndarray, names: Sequence[str], parts: dict[str, np.ndarray], where: str) -> None:
    """Raise :class:`DegenerateTaskError` unless the task and each named part hold at least two classes.

    Args:
        labels: (N,) class indices.
        names: class names (for the message).
        parts: part name (``train``, ``test``, ``fold2/train``...) → row indices; empty parts are skipped
            (a missing validation split is allowed).
        where: the task (named in the message).
    """
    present = np.unique(labels)
    if present.size < 2:
        only = names[int(present[0])] if present.size else "none"
        raise DegenerateTaskError(
            f"{where}: only one class ({only}) in the labels; a classification task needs at least two — "
            "check the label column or the task's label_names"
        )
    for part, rows in parts.items():
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0 or part.endswith("val"):
            continue
        classes = np.unique(labels[rows])
        if classes.size < 2:
            raise DegenerateTaskError(
                f"{where}: split {part} holds only class {names[int(classes[0])]!r} ({rows.size} rows); every "
                "train and test split needs at least two classes — fix the split file or use more data"
            )
