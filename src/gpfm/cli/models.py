"""``gpfm models``: list the registered encoders and their facts."""

from __future__ import annotations

import json

import typer


def models(
    as_json: bool = typer.Option(False, "--json", help="Print the full encoder facts as JSON."),
) -> None:
    """List registered encoders: dims, pooling, normalisation, tile recipe and weight licence."""
    from rich.console import Console
    from rich.table import Table

    from gpfm.models import get_encoder_spec, list_encoders

    specs = [get_encoder_spec(n) for n in list_encoders()]
    if as_json:
        typer.echo(json.dumps([s.summary() for s in specs], indent=2))
        return
    table = Table(title="gpfm encoders")
    for col in ("name", "dim", "pooling", "norm", "input", "tile recipe", "weights licence", "architecture"):
        table.add_column(col)
    for s in specs:
        table.add_row(s.name, str(s.embed_dim), s.pooling, s.preprocess.norm_name, str(s.preprocess.input_size),
                      s.tile_recipe, s.weights.license + (" (gated)" if s.weights.gated else ""), s.architecture)
    Console(width=200).print(table)


def register(app: typer.Typer) -> None:
    """Mount the command on the main app."""
    app.command("models")(models)
