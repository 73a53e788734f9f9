"""The ``gpfm`` command line: argument parsing only; every command calls one public Python function.

Each command group lives in its own module and is mounted here with one line.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="gpfm",
    help="GPFM pathology foundation model toolkit: encoders, slide feature extraction, pretraining, benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details (INFO level)."),
) -> None:
    """GPFM pathology foundation model toolkit."""
    import logging

    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # progress lines of long work show without --verbose (a bar replaces them on a terminal)
    for name in ("gpfm.progress", "gpfm.extract.progress"):
        logging.getLogger(name).setLevel(logging.INFO)


def _mount() -> None:
    from gpfm.cli import models

    models.register(app)
    from gpfm.cli import bench; bench.register(app)  # noqa: E702, I001
    from gpfm.cli import extract; extract.register(app)  # noqa: E702, I001
    from gpfm.cli import pretrain; pretrain.register(app)  # noqa: E702, I001
    from gpfm.cli import heatmap; heatmap.register(app)  # noqa: E702, I001


_mount()


def main() -> None:
    """Console-script entry point: the one error boundary of every command (exit codes in :mod:`gpfm.errors`).

    A :class:`~gpfm.errors.GpfmError` prints ``error: <one line>`` and exits with its code; a full disk exits 3;
    Ctrl-C exits 130; any other exception is a bug, reported in one line (``GPFM_DEBUG=1`` shows the traceback).
    """
    import os
    import sys

    import click

    try:  # typer ≥ 0.24 ships its own copy of click: catch the exceptions of both
        from typer._click import exceptions as typer_click_exceptions
    except ImportError:  # pragma: no cover - older typer uses click itself
        typer_click_exceptions = click.exceptions
    aborts = tuple({click.exceptions.Abort, getattr(typer_click_exceptions, "Abort", click.exceptions.Abort)})
    click_errors = tuple({click.ClickException, typer_click_exceptions.ClickException})

    from gpfm.errors import (
        EXIT_ENVIRONMENT,
        EXIT_INTERNAL,
        EXIT_INTERRUPTED,
        GpfmError,
        disk_full_message,
        is_disk_full,
        one_line,
    )

    debug = os.environ.get("GPFM_DEBUG", "").lower() in {"1", "true", "yes"}
    try:
        code = app(standalone_mode=False)
    except aborts:
        click.echo("interrupted; finished work is kept and a rerun resumes", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted; finished work is kept and a rerun resumes", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click_errors as exc:  # usage errors: click's own one-line message, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except GpfmError as exc:
        if debug:
            raise
        click.echo(f"error: {one_line(exc, 2000)}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last boundary: one line, never a raw traceback
        if debug:
            raise
        if is_disk_full(exc):
            where = getattr(exc, "filename", None) or "the output folder"
            click.echo(f"error: {disk_full_message(where)}", err=True)
            sys.exit(EXIT_ENVIRONMENT)
        if isinstance(exc, PermissionError):
            click.echo(f"error: permission denied: {exc.filename or one_line(exc)}; make it writable or choose "
                       "another path", err=True)
            sys.exit(EXIT_ENVIRONMENT)
        click.echo(f"error: unexpected {type(exc).__name__}: {one_line(exc)} — this is a bug in gpfm; rerun with "
                   "GPFM_DEBUG=1 for the traceback and report it", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
