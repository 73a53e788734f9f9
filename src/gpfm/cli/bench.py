"""``gpfm bench`` (run a suite for several encoders) and ``gpfm bench-report`` (rebuild the HTML report)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import typer

from gpfm.errors import EXIT_INPUT, EXIT_PARTIAL


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def bench(
    suite: str = typer.Argument(..., help="Suite YAML, or a shipped suite name (gpfm_public, lc25000_demo)."),
    encoders: str = typer.Option(
        ..., "--encoders", "-e", help="Comma-separated encoder names, e.g. gpfm,uni."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (results, report, per-run artifacts)."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Folder for relative data paths / ${DATA_ROOT}."
    ),
    weights: list[str] | None = typer.Option(
        None, "--weights", "-w", help="ENCODER=PATH or ENCODER=random (repeatable)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda, cuda:1 ... (default: CUDA if available)."
    ),
    precision: str | None = typer.Option(
        None, "--precision", help="fp32, bf16 or fp16 (default: hardware default)."
    ),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Comma-separated task ids (default: all)."),
    rerun: bool = typer.Option(False, "--rerun", help="Ignore finished results and run everything again."),
    as_json: bool = typer.Option(False, "--json", help="Print the leaderboard as JSON instead of a table."),
    extract: bool = typer.Option(False, "--extract", help="First embed the suite's slide cohorts (gpfm extract, "
                                 "resumable) for every encoder, then run the protocols."),
    jobs_root: Path | None = typer.Option(None, "--jobs-root", help="Where --extract keeps its extraction jobs "
                                          "(default: <data root>/jobs)."),
) -> None:
    """Run every task × protocol × encoder of a suite (resumably) and write results.csv/json + report.html.

    With --extract, the slides of each cohort the selected tasks need are embedded first, one resumable job per
    cohort and tiling recipe, so one command goes from slide folders to the leaderboard.
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from gpfm.eval.run.aggregate import aggregate
    from gpfm.eval.run.runner import parse_weights_overrides, run_suite
    from gpfm.eval.suite import SuiteError

    console = Console(stderr=True, width=160)

    def _progress(row) -> None:  # noqa: ANN001
        what = f"{row.value:.4f} {row.primary_metric}" if row.ok else f"{row.status}: {row.reason}"
        console.print(
            f"{row.task} · {row.protocol_id} · {row.encoder}: {what}{' (reused)' if row.reused else ''}",
            highlight=False,
            markup=False,
        )

    if extract:
        _extract_cohorts(suite, _split(encoders), data_root, _split(tasks) or None, jobs_root,
                         parse_weights_overrides(weights), device, precision)
    try:
        table = run_suite(
            suite,
            _split(encoders),
            out,
            data_root=data_root,
            device=device,
            precision=precision,
            weights=parse_weights_overrides(weights),
            only_tasks=_split(tasks) or None,
            rerun=rerun,
            progress=_progress,
        )
    except (SuiteError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    agg = aggregate(table.rows, table.encoders())
    if as_json:
        typer.echo(json.dumps(agg.to_dict()["overall"]["entries"], indent=2))
    else:
        lb = Table(title=f"{table.meta['suite']}: {len(agg.overall.units)} ranked task(s)")
        for col in ("encoder", "avg rank", "mean score", "firsts", "tasks", "missing"):
            lb.add_column(col)
        for e in agg.overall.entries:
            lb.add_row(
                e.encoder,
                "–" if e.average_rank is None else f"{e.average_rank:.2f}",
                "–" if e.mean_score is None else f"{e.mean_score:.4f}",
                str(e.n_first),
                str(e.n_tasks),
                str(e.n_failed),
            )
        Console(width=160).print(lb)
    n_ok = sum(r.ok for r in table.rows)
    n_failed = sum(r.status == "failed" for r in table.rows)
    typer.echo(f"{n_ok}/{len(table.rows)} runs ok; report: {Path(out) / 'report.html'}")
    if n_failed or not n_ok:  # exit-code policy (gpfm.errors): 1 = finished, but not everything succeeded
        what = f"{n_failed} run(s) failed (reasons in results.csv)" if n_failed else "no run succeeded"
        typer.echo(f"error: {what}", err=True)
        raise typer.Exit(EXIT_PARTIAL)


def _extract_cohorts(suite: str, encoders: list[str], data_root: Path | None, only_tasks: list[str] | None,
                     jobs_root: Path | None, weights: dict[str, str], device: str | None,
                     precision: str | None) -> None:
    """``bench --extract``: embed every cohort the selected tasks read, for every encoder (resumable)."""
    from gpfm.errors import InputError
    from gpfm.eval.suite import load_suite
    from gpfm.extract.cohorts import extract_cohort

    spec = load_suite(suite, data_root=data_root)
    cohorts = spec.cohorts_for(spec.select(only_tasks))
    if not cohorts:
        raise InputError(f"{suite}: --extract found no cohort for the selected tasks; declare cohorts: "
                         "(slides, features) in the suite")
    root = jobs_root or spec.base_dir / "jobs"
    failed = []
    for name, cohort in cohorts.items():
        for encoder in encoders:
            res = extract_cohort(name, cohort["slides"], cohort["features"], encoder, root,
                                 recipe=cohort.get("recipe"), weights=weights.get(encoder), device=device,
                                 precision=precision)
            counts = ", ".join(f"{k} {v}" for k, v in sorted(res.summary.counts.items()))
            typer.echo(f"extract {name} × {encoder}: {counts} -> {res.features_dir}", err=True)
            failed += [f"{name}/{s.slide_id}" for s in res.summary.failures]
    if failed:
        typer.echo(f"warning: {len(failed)} slide(s) failed to extract ({', '.join(failed[:3])}); their tasks "
                   "report the missing slides", err=True)


def bench_report(
    results_dir: Path = typer.Argument(..., help="A gpfm bench run folder (holds results.json)."),
    output: Path | None = typer.Option(
        None, "--output", help="HTML path (default: RESULTS_DIR/report.html)."
    ),
) -> None:
    """Rebuild leaderboard.json and the self-contained HTML report of a finished run."""
    from gpfm.eval.report import write_report

    try:
        path = write_report(results_dir, output)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    typer.echo(str(path))


def bench_check(
    suite: str = typer.Argument(..., help="Suite YAML, or a shipped suite name (gpfm_nbme, gpfm_public, ...)."),
    encoders: str | None = typer.Option(
        None, "--encoders", "-e", help="Also check per-encoder feature folders."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder for relative data paths."),
    as_json: bool = typer.Option(False, "--json", help="Print the check as JSON."),
) -> None:
    """Check a suite without running it: options valid; per task, the exact missing file and how to get it.

    Exits with 1 when the suite names an unknown protocol/loader or an option a protocol rejects; missing
    data is reported but is not an error (those tasks are skipped by `gpfm bench`).
    """
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from gpfm.eval.suite import SuiteError, load_suite
    from gpfm.eval.suite.check import check_suite

    try:
        checks = check_suite(suite, _split(encoders) or None, data_root)
        spec = load_suite(suite, data_root=data_root)
    except SuiteError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    private = list(spec.not_reproducible)
    if as_json:
        typer.echo(json.dumps({"suite": spec.name, "data_root": str(spec.base_dir),
                               "tasks": [{**asdict(c), "ready": c.ready} for c in checks],
                               "not_reproducible": private, "paper": spec.paper}, indent=2))
    else:
        table = Table(title=f"{suite}: {sum(c.ready for c in checks)}/{len(checks)} task(s) ready "
                            f"(data root {spec.base_dir})")
        for col in ("task", "family", "protocols", "status", "how to get it"):
            table.add_column(col, overflow="fold")
        for c in checks:
            missing = sorted({p for paths in c.missing.values() for p in paths})
            if c.errors:
                status = "; ".join(c.errors)
            elif missing:
                status = "missing: " + "\n".join(missing[:3]) + (f"\n(+{len(missing) - 3} more)" if len(missing) > 3
                                                                 else "")
            else:
                status = "ready"
            enc = (_split(encoders) or ["{encoder}"])[0]
            table.add_row(c.task, c.family, ", ".join(c.protocols), status,
                          c.obtain.replace("{encoder}", enc) if missing else "")
        Console(width=220).print(table)
        if private:
            typer.echo(f"{len(private)} task(s) of {spec.paper.get('name', 'the benchmark')} cannot be reproduced "
                       f"(private cohorts), listed and never scored: {', '.join(p['id'] for p in private)}")
        if spec.paper.get("tasks"):
            typer.echo(f"coverage: {sum(c.ready for c in checks)} ready of {len(checks)} runnable; "
                       f"{spec.paper['tasks']} tasks in {spec.paper.get('name', 'the benchmark')}")
    if any(c.errors for c in checks):
        raise typer.Exit(1)


def bench_import(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="gpfm-repo, patho-bench, clam, tcga-survival, crc-100k, "
                              "mhist, class-folders."),
    source: Path = typer.Argument(..., help="What the lab has: the repository copy, split folder or archive."),
    data_root: Path = typer.Option(..., "--data-root", help="Where the suite's tables go (the bench --data-root)."),
    task: str | None = typer.Option(None, "--task", help="clam: the task name (wsi/<TASK>.csv)."),
    labels: Path | None = typer.Option(None, "--labels", help="clam: the label CSV (slide_id, case_id, label)."),
    name: str | None = typer.Option(None, "--name", help="class-folders: the dataset name (roi/<NAME>/)."),
    variant: str | None = typer.Option(None, "--variant", help="crc-100k: norm (default) or nonorm."),
    cohort: str | None = typer.Option(None, "--cohort", help="tcga-survival: the TCGA project, e.g. BRCA."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace tables that exist with other content."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Turn the split/label files a lab already has into the layout the suites read; says what is missing."""
    from gpfm.errors import InputError
    from gpfm.eval.importers import IMPORTERS

    importer = IMPORTERS.get(fmt)
    options = {k: v for k, v in {"task": task, "labels": labels, "name": name, "variant": variant,
                                 "cohort": cohort}.items()
               if v is not None}
    accepted = set(inspect.signature(importer).parameters) - {"source", "data_root", "overwrite"}
    extra, needed = set(options) - accepted, {
        p.name for p in inspect.signature(importer).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty} - set(options)
    if extra or needed:
        raise InputError(f"bench-import {fmt}: " + (f"does not take --{', --'.join(sorted(extra))}" if extra else
                                                     f"needs --{', --'.join(sorted(needed))}"))
    if not source.exists():
        raise InputError(f"{source}: does not exist; pass the folder that holds the {fmt} files")
    report = importer(source, data_root, overwrite=overwrite, **options)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.found:
            typer.echo(f"found    {line}")
        for line in report.dropped:
            typer.echo(f"note     {line}")
        for line in report.missing:
            typer.echo(f"missing  {line}")
        for rel, digest in report.written.items():
            typer.echo(f"wrote    {data_root / rel}  sha256 {digest[:16]}…")
    if report.missing and not report.written:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Mount the commands on the main app."""
    app.command("bench")(bench)
    app.command("bench-report")(bench_report)
    app.command("bench-check")(bench_check)
    app.command("bench-import")(bench_import)
