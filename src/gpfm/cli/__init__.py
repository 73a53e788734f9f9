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


def _mount() -> None:
    from gpfm.cli import models

    models.register(app)
    from gpfm.cli import bench; bench.register(app)  # noqa: E702, I001
    from gpfm.cli import wsi; wsi.register(app)  # noqa: E702, I001
    from gpfm.cli import pretrain; pretrain.register(app)  # noqa: E702, I001


_mount()


def main() -> None:
    """Console-script entry point."""
    app()
