"""The contract between evaluation protocols, task data loaders and the suite runner.

* A **protocol** (``roi.linear.gpfm``, ``wsi.abmil.gpfm``, ``vqa.fusion``...) is a versioned class with pinned
  defaults in a typed ``Config`` dataclass. ``run(data, out_dir, config)`` returns a :class:`ProtocolResult`.
  Protocols are registered by name in :data:`PROTOCOLS` and never open slides or images: they get features.
* A **task loader** (``roi_images``, ``slide_h5``, ``survival_h5``, ``vqa_records``...) turns a task's ``data:``
  block from a suite YAML into the in-memory data object its protocols take, for one encoder, using the
  :class:`TaskContext` (feature cache, device, base folder). Loaders are registered in :data:`TASK_LOADERS`.
* The **suite runner** reads a suite YAML, calls loader then protocol for every task × encoder, stores each
  :class:`ProtocolResult` as JSON, and aggregates (mean score and average rank).

Artifact conventions (``ProtocolResult.artifacts`` maps a kind to a path relative to ``out_dir``); the HTML
report knows how to draw these kinds:

* ``predictions``: CSV, one row per test item (id, label, prediction, per-class probabilities or risk).
* ``roc_curves``: JSON ``{"classes": {name: {"fpr": [...], "tpr": [...], "auc": float}}}``.
* ``confusion_matrix``: JSON ``{"labels": [...], "matrix": [[int]]}`` (rows = truth).
* ``km_curves``: JSON ``{"groups": {name: {"time": [...], "survival": [...], "n": int}}, "logrank_p": float}``.
* ``attention``: HDF5 with one dataset per slide id (attention score per tile, row-aligned with coords).
* ``samples``: JSON list of ``{"id", "reference", "generated"}`` (report generation).
* ``vqa_breakdown``: JSON ``{"closed": {...}, "open": {...}}`` accuracies and counts.
* ``curves``: JSON of training curves ``{"epoch": [...], "train_loss": [...], "val_metric": [...]}``.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gpfm.registry import Registry


@dataclass
class ProtocolResult:
    """The outcome of one protocol on one task for one encoder, with everything needed to reproduce it.

    Attributes:
        protocol: protocol name, e.g. ``roi.linear.gpfm``.
        protocol_version: integer version of the protocol's pinned defaults/behaviour.
        task: task id from the suite.
        encoder: encoder name.
        primary_metric: the metric ranked in leaderboards (a key of ``metrics``).
        metrics: metric name → value (test split; mean over runs where there are several).
        metrics_sd: metric name → standard deviation over runs/folds/seeds (absent when a single run).
        ci95: metric name → (low, high) bootstrap 95% interval where computed.
        runs: per run/fold/seed metric dicts.
        config: the fully resolved protocol config (pinned defaults plus overrides).
        provenance: encoder weights sha256, preprocessing, precision, split hash, seeds, code version...
        artifacts: artifact kind → path relative to the result folder (see module docstring).
        flags: warnings shown beside the number (e.g. ``val==test (faithful)``, ``saturated``).
    """

    protocol: str
    protocol_version: int
    task: str
    encoder: str
    primary_metric: str
    metrics: dict[str, float]
    metrics_sd: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    runs: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The primary metric's value."""
        return self.metrics[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtocolResult:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["ci95"] = {k: tuple(v) for k, v in data.get("ci95", {}).items()}
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically."""
        from gpfm.atomic import write_json_atomic

        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ProtocolResult:
        """Read a result JSON written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


class Protocol(ABC):
    """Base class of every evaluation protocol.

    Subclasses set ``name``, ``version``, ``family`` (``roi_classification``, ``roi_retrieval``,
    ``wsi_classification``, ``survival``, ``vqa``, ``report_generation``), ``data_kind`` (the class of data
    they accept, e.g. ``RoiFeatures``) and a ``Config`` dataclass whose field defaults are the pinned protocol
    defaults, then implement :meth:`run`.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    family: ClassVar[str]
    Config: ClassVar[type]
    primary_metric: ClassVar[str]
    data_kind: ClassVar[type | None] = None  # None: any data (test-only protocols)

    @classmethod
    def check_data(cls, data: Any) -> None:
        """Refuse data of another kind than the protocol accepts, naming both (a suite wiring mistake)."""
        if cls.data_kind is not None and not isinstance(data, cls.data_kind):
            raise TypeError(
                f"protocol {cls.name} needs {cls.data_kind.__name__} data but the task's loader gave "
                f"{type(data).__name__}; use a loader of the {cls.family} family for this task"
            )

    def __init__(self, **overrides: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(
                f"protocol {self.name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
            )
        self.config = self.Config(**overrides)

    def resolved_config(self) -> dict[str, Any]:
        """The pinned defaults with overrides applied, as recorded beside every result."""
        return {"protocol": self.name, "version": self.version, **dataclasses.asdict(self.config)}

    def make_result(self, *, task: str, encoder: str, metrics: dict[str, float], **fields: Any) -> ProtocolResult:
        """A :class:`ProtocolResult` with this protocol's name, version, primary metric and resolved config."""
        return ProtocolResult(
            protocol=self.name,
            protocol_version=self.version,
            task=task,
            encoder=encoder,
            primary_metric=self.primary_metric,
            metrics=metrics,
            config=self.resolved_config(),
            **fields,
        )

    @abstractmethod
    def run(self, data: Any, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Evaluate on ``data`` and write artifacts under ``out_dir``."""


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol", discover="gpfm.eval.families")


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: register a protocol under its ``name``."""
    PROTOCOLS.register(cls.name, cls)
    return cls


def create_protocol(name: str, **overrides: Any) -> Protocol:
    """Instantiate a registered protocol with option overrides (unknown options are errors)."""
    return PROTOCOLS.get(name)(**overrides)


@dataclass
class TaskContext:
    """What a task loader needs besides the task's own ``data:`` block.

    Attributes:
        encoder: encoder name the features must come from.
        base_dir: folder that relative paths in the suite are resolved against.
        cache_dir: root of the feature cache.
        device: torch device string for on-the-fly embedding.
        precision: encoder precision (None = encoder default).
        weights: explicit weights path for the encoder (None = resolve as usual).
        batch_size: embedding batch size.
    """

    encoder: str
    base_dir: Path
    cache_dir: Path
    device: str = "cpu"
    precision: str | None = None
    weights: str | None = None
    batch_size: int = 64


TaskLoader = Callable[[dict[str, Any], TaskContext], Any]
TASK_LOADERS: Registry[TaskLoader] = Registry("task data kind", discover="gpfm.eval.families")


def register_task_loader(kind: str) -> Callable[[TaskLoader], TaskLoader]:
    """Decorator: register a loader for suite tasks whose ``data.kind`` is ``kind``."""

    def _add(fn: TaskLoader) -> TaskLoader:
        TASK_LOADERS.register(kind, fn)
        return fn

    return _add
