"""``gpfm models`` and ``gpfm convert``: the encoder-level commands, over :mod:`gpfm.models`."""

from __future__ import annotations

import json
from pathlib import Path

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


def convert(
    source: Path = typer.Argument(..., help="GPFM checkpoint in either layout (DINOv2 teacher .pth or timm)."),
    out: Path = typer.Argument(..., help="Output path (.safetensors for --to timm, .pth for --to dinov2)."),
    to: str = typer.Option("timm", "--to", help="timm (format B safetensors) or dinov2 (format A .pth)."),
) -> None:
    """Convert a GPFM checkpoint between layouts, validating it by a strict load; prints both SHA-256."""
    from gpfm.models.convert import convert_gpfm_checkpoint

    rep = convert_gpfm_checkpoint(source, out, to=to)
    typer.echo(f"{rep.source}: {rep.source_format} layout, sha256 {rep.source_sha256}")
    typer.echo(f"{rep.out}: {rep.out_format} layout, {rep.n_tensors} tensors, sha256 {rep.out_sha256}")


def register(app: typer.Typer) -> None:
    """Mount the commands on the main app."""
    app.command("models")(models)
    app.command("convert")(convert)
