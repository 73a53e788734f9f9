"""HTML fragments drawn from protocol artifacts (see the artifact conventions in :mod:`gpfm.eval.protocol`).

Each function takes the artifact files of one task × protocol keyed by encoder and returns HTML: figures as
inline PNG data URIs (:mod:`gpfm.eval.report.plots`), tables as escaped HTML. A broken artifact is logged and
skipped; it never breaks the report.
"""

from __future__ import annotations

import html
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import gpfm.eval.report.plots as plots
from gpfm.registry import Registry

log = logging.getLogger(__name__)

MAX_SAMPLES = 5


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def load_json(path: Path) -> Any:
    """Parsed JSON of an artifact, or None (logged) when it is unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("report: cannot read %s: %s", path, err)
        return None


def _attention_summary(path: Path) -> dict[str, float] | None:
    """Slides, mean tiles, mean normalised attention entropy and mean top-10% attention mass."""
    try:
        import h5py

        entropies, top_mass, sizes = [], [], []
        with h5py.File(path, "r") as fh:
            for name in fh:
                a = np.asarray(fh[name][()], dtype=float).ravel()
                if a.size == 0:
                    continue
                p = (
                    a / a.sum()
                    if (a >= 0).all() and a.sum() > 0
                    else np.exp(a - a.max()) / np.exp(a - a.max()).sum()
                )
                sizes.append(a.size)
                nz = p[p > 0]
                entropies.append(float(-(nz * np.log(nz)).sum() / np.log(a.size)) if a.size > 1 else 0.0)
                k = max(1, int(np.ceil(0.1 * a.size)))
                top_mass.append(float(np.sort(p)[::-1][:k].sum()))
        if not sizes:
            return None
        return {
            "slides": len(sizes),
            "mean_tiles": float(np.mean(sizes)),
            "entropy": float(np.mean(entropies)),
            "top10_mass": float(np.mean(top_mass)),
        }
    except Exception as err:  # a broken artifact must not break the whole report
        log.warning("report: cannot summarise attention %s: %s", path, err)
        return None


#: Artifact kind → (section title, function drawing ``{encoder: loaded JSON}`` as a data-URI image). The kinds
#: every family may write are registered here; a family with its own kind registers a drawer in its module.
DRAWERS: Registry[tuple[str, Callable[[dict[str, Any]], str]]] = Registry("report drawer",
                                                                        discover="gpfm.eval.families")


def register_drawer(kind: str, title: str, draw: Callable[[dict[str, Any]], str]) -> None:
    """Draw artifacts of ``kind`` (JSON files named in ``ProtocolResult.artifacts``) in the HTML report."""
    DRAWERS.register(kind, (title, draw))


register_drawer("roc_curves", "ROC curves", plots.roc_figure)
register_drawer("confusion_matrix", "Confusion matrices", plots.confusion_figure)
register_drawer("km_curves", "Kaplan–Meier curves of predicted risk groups", plots.km_figure)
register_drawer("curves", "Training curves", plots.curves_figure)
register_drawer("fewshot", "Few-shot accuracy", plots.fewshot_figure)


def artifact_sections(run_dir: Path, results: dict[str, Any]) -> str:
    """Figures and tables drawn from the artifacts of one task × protocol, one panel per encoder."""
    by_kind: dict[str, dict[str, Path]] = defaultdict(dict)
    for enc, (row, res) in results.items():
        base = (run_dir / row.result_path).parent
        for kind, rel in (res.get("artifacts") or {}).items():
            if (base / rel).is_file():
                by_kind[kind][enc] = base / rel
    parts = []
    for kind, (title, draw) in DRAWERS.items():
        loaded = {enc: d for enc, p in by_kind.get(kind, {}).items() if (d := load_json(p)) is not None}
        if loaded:
            try:
                parts.append(f'<h4>{title}</h4><img class="plot" alt="{_e(kind)}" src="{draw(loaded)}">')
            except Exception as err:
                parts.append(f'<p class="failed">could not draw {_e(kind)}: {_e(err)}</p>')
    if by_kind.get("attention"):
        rows = []
        for enc, p in by_kind["attention"].items():
            s = _attention_summary(p)
            if s:
                rows.append(
                    f"<tr><td>{_e(enc)}</td><td class=num>{s['slides']}</td>"
                    f"<td class=num>{s['mean_tiles']:.0f}</td><td class=num>{s['entropy']:.3f}</td>"
                    f"<td class=num>{s['top10_mass']:.3f}</td></tr>"
                )
        if rows:
            parts.append(
                "<h4>MIL attention</h4><table><tr><th>encoder</th><th>slides</th><th>mean tiles</th>"
                "<th>normalised entropy (1 = uniform)</th><th>mass on top 10% tiles</th></tr>"
                + "".join(rows)
                + "</table>"
            )
    if by_kind.get("retrieval_per_class"):
        parts.append(_per_class_table(by_kind["retrieval_per_class"]))
    if by_kind.get("vqa_breakdown"):
        parts.append(_vqa_table(by_kind["vqa_breakdown"]))
    if by_kind.get("samples"):
        parts.append(_samples_table(by_kind["samples"]))
    return "".join(parts)


def _per_class_table(paths: dict[str, Path]) -> str:
    """Per-class retrieval scores ``{class: {metric@k: value}}``: the ``@1`` metrics, class × encoder."""
    data = {enc: d for enc, p in paths.items() if isinstance(d := load_json(p), dict) and d}
    if not data:
        return ""
    first = next(iter(next(iter(data.values())).values()), {})
    metrics = [m for m in first if m.endswith("@1")] or list(first)[:1]
    classes = list(dict.fromkeys(c for d in data.values() for c in d))
    head = "<tr><th>class</th>" + "".join(f"<th>{_e(enc)}<br>{_e(m)}</th>" for enc in data for m in metrics)
    body = "".join(
        f"<tr><td>{_e(c)}</td>"
        + "".join(
            f"<td class=num>{_num(data[enc].get(c, {}).get(m), 3)}</td>" for enc in data for m in metrics
        )
        + "</tr>"
        for c in classes
    )
    return f"<h4>Retrieval per class</h4><table>{head}</tr>{body}</table>"


def _vqa_table(paths: dict[str, Path]) -> str:
    data = {enc: d for enc, p in paths.items() if isinstance(d := load_json(p), dict)}
    groups = [g for g in ("closed", "open", "overall") if any(g in d for d in data.values())]
    groups += sorted({k for d in data.values() for k in d} - set(groups))
    rows = []
    for enc, d in data.items():
        for g in groups:
            v = d.get(g)
            if isinstance(v, dict):
                cells = ", ".join(
                    f"{_e(k)} = {_e(f'{x:.4f}' if isinstance(x, float) else x)}" for k, x in v.items()
                )
            else:
                cells = _e(f"{v:.4f}" if isinstance(v, float) else v)
            rows.append(f"<tr><td>{_e(enc)}</td><td>{_e(g)}</td><td>{cells}</td></tr>")
    return (
        "<h4>VQA accuracy</h4><table><tr><th>encoder</th><th>question type</th><th>values</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _samples_table(paths: dict[str, Path]) -> str:
    rows = []
    for enc, p in paths.items():
        samples = load_json(p)
        for s in (samples or [])[:MAX_SAMPLES]:
            if isinstance(s, dict):
                rows.append(
                    f"<tr><td>{_e(enc)}</td><td>{_e(s.get('id', ''))}</td><td>{_e(s.get('reference', ''))}"
                    f"</td><td>{_e(s.get('generated', ''))}</td></tr>"
                )
    return (
        f"<h4>Generated vs reference (first {MAX_SAMPLES} per encoder)</h4>"
        "<table><tr><th>encoder</th><th>id</th><th>reference</th><th>generated</th></tr>"
        + "".join(rows)
        + "</table>"
    )
