"""The self-contained HTML report of a benchmark run (``<run>/report.html``).

One file, no network: inline CSS, plots as inline base64 PNGs, a strict Content-Security-Policy that forbids
any external fetch, and a tiny inline self-check script that records load errors and broken images on
``<body data-report-check=...>`` (what the headless-browser test reads). Sections: overview leaderboard (mean
score and average rank, with a rank chart and a task × encoder rank grid), per-family breakdown, saturated
tasks apart, one section per task (numbers with CI/sd, protocol@version, flags, provenance; ROC curves,
confusion matrices, KM curves, training curves, MIL attention summary, report-generation samples, VQA
breakdown where the protocol wrote them), and the failed/skipped runs.
"""

from __future__ import annotations

import html
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import gpfm.eval.report.plots as plots
from gpfm.atomic import write_json_atomic, write_text_atomic
from gpfm.eval.report.artifacts import artifact_sections, load_json
from gpfm.eval.run.aggregate import Aggregate, Leaderboard, aggregate
from gpfm.eval.run.results import ResultRow, ResultsTable

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
LEADERBOARD_JSON = "leaderboard.json"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 2rem 3rem;color:#1d232b;
font-size:14px}
h1{margin:1.2rem 0 .2rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
h3{margin:1.6rem 0 .3rem}.meta{color:#57606a;font-size:12px}nav a{margin-right:1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#eaf5ea}.flag{background:#fff3cd;border:1px solid #e6c65c;border-radius:3px;
padding:0 4px;margin-right:3px;font-size:11px;white-space:nowrap}.failed{color:#b42318}.skipped{color:#8a6d00}
.note{background:#f6f8fa;border-left:4px solid #8c959f;padding:.4rem .8rem;margin:.6rem 0}
img.plot{max-width:100%;display:block;margin:.3rem 0 1rem}details{font-size:12px}
pre{white-space:pre-wrap;font-size:11px;background:#f6f8fa;padding:.4rem}code{font-size:12px}
"""

# Records uncaught errors and failed resource loads, then (on load) counts tables and broken images.
_SELF_CHECK = """
(function(){var errs=[];window.__reportErrors=errs;
window.addEventListener('error',function(e){var t=e.target;
errs.push(t&&t!==window&&t.tagName?('failed to load '+t.tagName):String(e.message));},true);
window.addEventListener('load',function(){var imgs=document.images,broken=0;
for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){broken++;}}
document.body.setAttribute('data-report-check',JSON.stringify({ok:errs.length===0&&broken===0,
images:imgs.length,broken_images:broken,tables:document.getElementsByTagName('table').length,errors:errs}));});})();
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _flags(flags: list[str]) -> str:
    return "".join(f'<span class="flag">{_e(f)}</span>' for f in flags)


def _anchor(task: str) -> str:
    return "task-" + "".join(c if c.isalnum() else "-" for c in task)


def _leaderboard_table(board: Leaderboard, with_firsts: bool = True) -> str:
    head = "<tr><th>#</th><th>encoder</th><th>average rank ↓</th><th>mean score ↑</th>"
    head += (
        "<th>tasks ranked first</th>" if with_firsts else ""
    ) + "<th>tasks with a number</th><th>missing</th></tr>"
    body = []
    for i, e in enumerate(board.entries, 1):
        cls = ' class="best"' if i == 1 and e.average_rank is not None else ""
        body.append(
            f"<tr{cls}><td>{i}</td><td>{_e(e.encoder)}</td><td class=num>{_num(e.average_rank, 2)}</td>"
            f"<td class=num>{_num(e.mean_score)}</td>"
            + (f"<td class=num>{e.n_first}</td>" if with_firsts else "")
            + f"<td class=num>{e.n_tasks}</td><td class=num>{e.n_failed}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _overview(agg: Aggregate, rows: list[ResultRow]) -> str:
    board = agg.overall
    parts = ['<section id="leaderboard"><h2>Leaderboard</h2>']
    parts.append(
        f"<p>{len(board.units)} ranked task(s), each through its headline protocol (the first one the suite "
        "lists). Rank 1 = best per task, ties averaged; average rank and mean score are means over the "
        "tasks an encoder has a number for. Saturated tasks are ranked separately below.</p>"
    )
    # which protocol (and version) produced the ranked numbers, as a headline number must say what produced it
    used: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.headline and r.task in board.units:
            used[r.protocol_id].add(r.task)
    if used:
        listing = ", ".join(
            f"<code>{_e(p)}</code> ({len(t)} task{'s' if len(t) > 1 else ''})"
            for p, t in sorted(used.items())
        )
        parts.append(f"<p>Headline protocols: {listing}.</p>")
    if not agg.complete:
        parts.append(
            '<p class="note">Not every encoder has a number on every task (see "missing"): mean scores '
            "over different task sets are not comparable; compare average ranks with care.</p>"
        )
    parts.append(_leaderboard_table(board))
    parts.append(_significance(board))
    if board.units and any(e.average_rank is not None for e in board.entries):
        chart = plots.rank_chart(
            [e.encoder for e in board.entries],
            [e.average_rank for e in board.entries],
            [e.mean_score for e in board.entries],
        )
        parts.append(f'<img class="plot" alt="rank chart" src="{chart}">')
        if len(board.units) >= 2:
            grid = plots.rank_heatmap(board.units, agg.encoders, board.ranks)
            parts.append(f'<img class="plot" alt="rank per task" src="{grid}">')
    parts.append("</section>")
    return "".join(parts)


def _significance(board: Leaderboard) -> str:
    """Friedman p, the Nemenyi CD diagram and the Holm-corrected pairwise Wilcoxon table."""
    parts = []
    if board.friedman_p is not None:
        parts.append(
            f"<p>Friedman test over the {len(board.complete_units)} tasks every encoder ran: "
            f"p = {board.friedman_p:.3g}.</p>"
        )
    if board.critical_difference is not None and board.complete_ranks:
        diagram = plots.cd_diagram(board.complete_ranks, board.critical_difference, len(board.complete_units))
        parts.append(f'<img class="plot" alt="critical difference diagram" src="{diagram}">')
    if board.pairwise:
        rows = "".join(
            f"<tr><td>{_e(t.a)}</td><td>{_e(t.b)}</td><td class=num>{t.n_tasks}</td>"
            f"<td class=num>{t.wins_a} / {t.wins_b}</td><td class=num>{t.p_value:.3g}</td>"
            f"<td class=num>{t.p_holm:.3g}</td></tr>"
            for t in board.pairwise
        )
        parts.append(
            "<details><summary>Pairwise Wilcoxon signed-rank tests over shared tasks (Holm-corrected)"
            "</summary>"
            "<table><tr><th>A</th><th>B</th><th>tasks</th><th>A better / B better</th><th>p</th>"
            f"<th>p (Holm)</th></tr>{rows}</table></details>"
        )
    return "".join(parts)


def _families(agg: Aggregate) -> str:
    if not agg.families:
        return ""
    head = (
        "<tr><th>family</th><th>tasks</th>"
        + "".join(f"<th>{_e(e)}<br>avg rank / mean</th>" for e in agg.encoders)
        + "</tr>"
    )
    body = []
    for name, board in agg.families.items():
        cells = []
        for enc in agg.encoders:
            s = board.entry(enc)
            cells.append(
                f"<td class=num>{_num(s.average_rank, 2)} / {_num(s.mean_score, 3)} "
                f"<span class=meta>(n={s.n_tasks})</span></td>"
            )
        body.append(f"<tr><td>{_e(name)}</td><td class=num>{len(board.units)}</td>{''.join(cells)}</tr>")
    out = f'<section id="families"><h2>Per family</h2><table>{head}{"".join(body)}</table>'
    if agg.saturated is not None:
        out += (
            '<h3 id="saturated">Saturated tasks (not in the ranks above)</h3>'
            f"<p>{_e(', '.join(agg.saturated.units))}</p>{_leaderboard_table(agg.saturated)}"
        )
    return out + "</section>"


def coverage(meta: dict[str, Any], rows: list[ResultRow]) -> dict[str, Any] | None:
    """How much of the benchmark a suite reproduces a run covered (None when the suite names no benchmark)."""
    paper = meta.get("paper") or {}
    if not paper.get("tasks"):
        return None
    ranked = sorted({r.task for r in rows if r.headline and r.ok})
    private = meta.get("not_reproducible") or []
    return {"benchmark": paper.get("name", ""), "tasks": int(paper["tasks"]), "not_reproducible": len(private),
            "reproducible": len(meta.get("tasks", [])), "with_results": len(ranked)}


def _coverage(meta: dict[str, Any], rows: list[ResultRow]) -> str:
    cov = coverage(meta, rows)
    if cov is None:
        return ""
    private = meta.get("not_reproducible") or []
    listing = "".join(f"<tr><td>{_e(p['id'])}</td><td>{_e(p['family'])}</td><td>{_e(p['reason'])}</td></tr>"
                      for p in private)
    return (
        f'<section id="coverage"><h2>Coverage of {_e(cov["benchmark"])}</h2><p>This run has results on '
        f"<b>{cov['with_results']}</b> of the benchmark's {cov['tasks']} tasks. The suite runs "
        f"{cov['reproducible']}; {cov['not_reproducible']} cannot be reproduced by anyone outside their "
        "centres (private cohorts) and are listed, never scored.</p>"
        + (f"<details><summary>not reproducible ({len(private)})</summary><table><tr><th>task</th><th>family"
           f"</th><th>why</th></tr>{listing}</table></details>" if private else "")
        + "</section>"
    )


def _published(task: str, rows: list[ResultRow], info: dict[str, Any]) -> str:
    """The task's published numbers beside ours (headline protocol), with the difference."""
    ref = info.get("reference") or {}
    if not ref:
        return ""
    ours = {r.encoder: r.value for r in rows if r.headline and r.ok}
    cells = []
    for model, value in ref.items():
        mine = ours.get(model)
        delta = "" if mine is None else f" (ours {_num(mine)}, Δ {mine - value:+.4f})"
        cells.append(f"{_e(model)} {value:g}{delta}")
    return f"<p class=meta>published: {'; '.join(cells)}</p>"


def _references(refs: dict[str, Any]) -> str:
    """The suite's published reference numbers: ``{name: {model: value}}`` rows become a table."""
    if not refs:
        return ""
    tables = {k: v for k, v in refs.items() if isinstance(v, dict)}
    notes = "".join(f"<p class=meta>{_e(k)}: {_e(v)}</p>" for k, v in refs.items() if k not in tables)
    models = list(dict.fromkeys(m for v in tables.values() for m in v))
    head = "<tr><th></th>" + "".join(f"<th>{_e(m)}</th>" for m in models) + "</tr>"
    body = "".join(
        f"<tr><td>{_e(k)}</td>" + "".join(f"<td class=num>{_e(v.get(m, ''))}</td>" for m in models) + "</tr>"
        for k, v in tables.items()
    )
    table = f"<table>{head}{body}</table>" if tables else ""
    return f'<section id="references"><h2>Published reference numbers</h2>{notes}{table}</section>'


def _provenance(row: ResultRow, res: dict[str, Any]) -> str:
    prov = res.get("provenance", {})
    sha = str(prov.get("encoder_weights_sha256", ""))
    precision = prov.get("precision", prov.get("precision_resolved", ""))
    brief = f"weights {sha[:12]} · {precision} · key {row.run_key[:12]}"
    full = json.dumps({"config": res.get("config", {}), "provenance": prov}, indent=1, default=str)
    return f"<details><summary>{_e(brief)}</summary><pre>{_e(full)}</pre></details>"


def _task_section(
    task: str, rows: list[ResultRow], info: dict[str, Any], run_dir: Path, agg: Aggregate
) -> str:
    parts = [
        f'<h3 id="{_anchor(task)}">{_e(task)}</h3><p class="meta">{_e(info.get("group", rows[0].group))}'
        + (f" · {_e(info['description'])}" if info.get("description") else "")
        + (f" · source: {_e(info['source'])}" if info.get("source") else "")
        + (" · <span class=flag>saturated</span>" if rows[0].saturated else "")
        + "</p>",
        _published(task, rows, info),
    ]
    board = agg.saturated if rows[0].saturated and agg.saturated else agg.overall
    head = (
        "<tr><th>protocol@version</th><th>encoder</th><th>metric</th><th>value</th><th>95% CI</th><th>sd</th>"
        "<th>rank</th><th>flags</th><th>status</th><th>provenance</th></tr>"
    )
    body = []
    by_protocol: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in rows:
        res = load_json(run_dir / r.result_path) if r.ok and r.result_path else None
        if res is not None:
            by_protocol[r.protocol][r.encoder] = (r, res)
        rank = board.ranks.get(task, {}).get(r.encoder) if r.headline else None
        ci = f"{_num(r.ci_low)} – {_num(r.ci_high)}" if r.ci_low is not None else "–"
        status = (
            "ok" + (" (reused)" if r.reused else "")
            if r.ok
            else f'<span class="{_e(r.status)}">{_e(r.status)}: {_e(r.reason)}</span>'
        )
        arrow = ("↑" if r.higher_is_better else "↓") if r.primary_metric else "–"
        body.append(
            f"<tr><td><code>{_e(r.protocol_id)}</code>{' (headline)' if r.headline else ''}</td>"
            f"<td>{_e(r.encoder)}</td><td>{_e(r.primary_metric or '')} {arrow}</td>"
            f"<td class=num>{_num(r.value)}</td><td class=num>{ci}</td>"
            f"<td class=num>{_num(r.sd)}</td><td class=num>{'' if rank is None else f'{rank:g}'}</td>"
            f"<td>{_flags(r.flags)}</td><td>{status}</td><td>{_provenance(r, res) if res else ''}</td></tr>"
        )
    parts.append(f"<table>{head}{''.join(body)}</table>")
    for protocol, results in by_protocol.items():
        extra = artifact_sections(run_dir, results)
        if extra:
            parts.append(f"<h4 class=meta>{_e(protocol)}</h4>{extra}")
    return "".join(parts)


def _problems(table: ResultsTable) -> str:
    bad = [r for r in table.rows if not r.ok]
    if not bad:
        return ""
    rows = "".join(
        f'<tr><td><a href="#{_anchor(r.task)}">{_e(r.task)}</a></td><td>{_e(r.protocol)}</td>'
        f'<td>{_e(r.encoder)}</td><td class="{_e(r.status)}">{_e(r.status)}</td><td>{_e(r.reason)}</td></tr>'
        for r in bad
    )
    return (
        f'<section id="problems"><h2>Failed and skipped runs ({len(bad)})</h2><table><tr><th>task</th>'
        f"<th>protocol</th><th>encoder</th><th>status</th><th>reason</th></tr>{rows}</table></section>"
    )


def build_report_html(table: ResultsTable, run_dir: str | Path, agg: Aggregate | None = None) -> str:
    """The report of a results table as one self-contained HTML string."""
    run_dir = Path(run_dir)
    agg = agg or aggregate(table.rows, table.encoders())
    meta = table.meta
    machine = meta.get("machine", {})
    title = f"gpfm benchmark: {meta.get('suite', 'suite')}"
    facts = (
        f"encoders: {', '.join(table.encoders())} · device {meta.get('device', '?')} · precision "
        f"{meta.get('precision', '?')} · gpfm {meta.get('gpfm_version', '?')} · cpu "
        f"{machine.get('cpu_capability', '?')} · {meta.get('started', '')} → {meta.get('finished', '')}"
    )
    tasks: dict[str, list[ResultRow]] = defaultdict(list)
    for r in table.rows:
        tasks[r.task].append(r)
    task_info = meta.get("task_info", {})
    sections = "".join(
        _task_section(t, rows, task_info.get(t, {}), run_dir, agg) for t, rows in tasks.items()
    )
    weights = "".join(
        f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in meta.get("weights", {}).items()
    )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
        f"<style>{_CSS}</style><script>{_SELF_CHECK}</script></head><body>"
        f"<h1>{_e(title)}</h1><p class=meta>{_e(facts)}</p>"
        + (f"<p>{_e(meta['suite_description'])}</p>" if meta.get("suite_description") else "")
        + '<nav><a href="#leaderboard">leaderboard</a><a href="#families">families</a>'
        '<a href="#tasks">tasks</a><a href="#problems">failed/skipped</a>'
        '<a href="#provenance">provenance</a></nav>'
        + _overview(agg, table.rows)
        + _coverage(meta, table.rows)
        + _families(agg)
        + _references(meta.get("references") or {})
        + f'<section id="tasks"><h2>Tasks</h2>{sections}</section>'
        + _problems(table)
        + '<section id="provenance"><h2>Provenance</h2>'
        f"<p>suite <code>{_e(meta.get('suite_path', ''))}</code> "
        f"version {_e(meta.get('suite_version', ''))}; "
        f"data root <code>{_e(meta.get('data_root', ''))}</code></p>"
        f"<table><tr><th>encoder</th><th>weights SHA-256</th></tr>{weights}</table>"
        f"<details><summary>machine</summary><pre>{_e(json.dumps(machine, indent=1, default=str))}</pre>"
        "</details>"
        "</section></body></html>"
    )


def write_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Rebuild ``leaderboard.json`` and the HTML report of a run folder from its ``results.json``.

    Args:
        run_dir: a ``gpfm bench`` output folder.
        out_path: where to write the HTML (default ``<run_dir>/report.html``); written atomically.

    Returns:
        The path of the HTML file.
    """
    run_dir = Path(run_dir)
    table = ResultsTable.load(run_dir)
    agg = aggregate(table.rows, table.encoders())
    board = agg.to_dict()
    cov = coverage(table.meta, table.rows)
    if cov is not None:
        board["coverage"] = cov
    write_json_atomic(run_dir / LEADERBOARD_JSON, board)
    target = Path(out_path) if out_path is not None else run_dir / REPORT_HTML
    write_text_atomic(target, build_report_html(table, run_dir, agg))
    return target
