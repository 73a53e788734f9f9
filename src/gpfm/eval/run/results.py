"""The results table of a benchmark run: one row per task × protocol × encoder, written as CSV and JSON.

Every row carries the protocol name **and** version next to the number, the primary
metric and its direction, the bootstrap CI and the sd over runs, the flags, and where the full
:class:`~gpfm.eval.protocol.ProtocolResult` (with provenance and artifacts) lives.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gpfm.atomic import write_json_atomic, write_text_atomic

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"

_LOWER_IS_BETTER_TOKENS = (
    "loss",
    "error",
    "err",
    "brier",
    "ibs",
    "mse",
    "mae",
    "rmse",
    "ece",
    "nll",
    "perplexity",
    "leakage",  # robustness: site information in features
    "gap",  # robustness: accuracy lost on unseen sites
    "drop",  # robustness: accuracy lost under a perturbation
)


def metric_higher_is_better(metric: str, direction: str | None = None) -> bool:
    """Whether larger values of ``metric`` are better.

    Args:
        metric: metric name, e.g. ``balanced_accuracy``, ``c_index``, ``val_loss``, ``brier_score``.
        direction: explicit ``higher``/``lower`` from the task config; wins over the name heuristic.

    The heuristic treats names containing a loss/error token (``loss``, ``error``, ``brier``, ``ibs``,
    ``mse``, ``mae``, ``rmse``, ``ece``, ``nll``, ``perplexity``) as lower-is-better and everything else
    (accuracies, AUROC, F1, c-index, BLEU, ...) as higher-is-better.
    """
    if direction is not None:
        return direction == "higher"
    tokens = metric.lower().replace("-", "_").replace("@", "_").split("_")
    return not any(tok in _LOWER_IS_BETTER_TOKENS for tok in tokens)


@dataclass
class ResultRow:
    """One task × protocol × encoder outcome.

    Attributes:
        task: task id.
        family: task family.
        group: ``family`` or ``family/subgroup`` (per-family breakdowns).
        protocol: protocol name.
        protocol_version: protocol version (None when the protocol is not registered).
        encoder: encoder name.
        status: ``ok``, ``failed`` or ``skipped``.
        primary_metric: metric ranked in leaderboards.
        value: the primary metric's value (None unless ok).
        ci_low: lower end of the 95% bootstrap CI, if the protocol computed one.
        ci_high: upper end of the CI.
        sd: standard deviation over runs/folds/seeds, if several.
        higher_is_better: direction of the primary metric.
        headline: the protocol is the task's headline protocol (the one aggregated).
        saturated: the task is flagged saturated (reported separately).
        flags: warnings shown beside the number (``val==test (faithful)``, ``saturated``...).
        reason: one line saying why a row failed or was skipped.
        result_path: the stored ProtocolResult JSON, relative to the run folder.
        run_key: hash of everything that determines the result (reuse key).
        reused: the result came from an earlier run.
        seconds: wall time of the loader + protocol (of the original run when reused).
    """

    task: str
    family: str
    group: str
    protocol: str
    protocol_version: int | None
    encoder: str
    status: str
    primary_metric: str | None = None
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    sd: float | None = None
    higher_is_better: bool = True
    headline: bool = True
    saturated: bool = False
    flags: list[str] = field(default_factory=list)
    reason: str = ""
    result_path: str | None = None
    run_key: str = ""
    reused: bool = False
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        """The row holds a number."""
        return self.status == STATUS_OK and self.value is not None

    @property
    def protocol_id(self) -> str:
        """``name@version`` as printed beside numbers."""
        return (
            f"{self.protocol}@{self.protocol_version}" if self.protocol_version is not None else self.protocol
        )


@dataclass
class ResultsTable:
    """All rows of one benchmark run plus the run's metadata.

    Attributes:
        rows: the rows in suite order (task, then encoder, then protocol).
        meta: suite name/path/version, encoders, machine info, gpfm version, timestamps.
    """

    rows: list[ResultRow]
    meta: dict[str, Any] = field(default_factory=dict)

    def encoders(self) -> list[str]:
        """Encoder names in first-seen order."""
        return list(dict.fromkeys([*self.meta.get("encoders", []), *(r.encoder for r in self.rows)]))

    def find(self, task: str, protocol: str, encoder: str) -> ResultRow | None:
        """The row for one task × protocol × encoder, if any."""
        for r in self.rows:
            if (r.task, r.protocol, r.encoder) == (task, protocol, encoder):
                return r
        return None

    def to_csv(self) -> str:
        """CSV text (flags joined by ``;``)."""
        names = [f.name for f in fields(ResultRow)]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            d = asdict(r)
            d["flags"] = ";".join(r.flags)
            writer.writerow({k: "" if v is None else v for k, v in d.items()})
        return buf.getvalue()

    def write(self, out_dir: str | Path) -> None:
        """Write ``results.csv`` and ``results.json`` atomically into ``out_dir``."""
        out = Path(out_dir)
        write_text_atomic(out / RESULTS_CSV, self.to_csv())
        write_json_atomic(out / RESULTS_JSON, {"meta": self.meta, "rows": [asdict(r) for r in self.rows]})

    @classmethod
    def load(cls, out_dir: str | Path) -> ResultsTable:
        """Read the ``results.json`` of a run folder.

        Raises:
            FileNotFoundError: the folder holds no results.json (not a ``gpfm bench`` output folder).
        """
        path = Path(out_dir) / RESULTS_JSON
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no results table here; run `gpfm bench SUITE --out {out_dir}` first"
            )
        data = json.loads(path.read_text())
        return cls(rows=[ResultRow(**r) for r in data["rows"]], meta=data.get("meta", {}))
