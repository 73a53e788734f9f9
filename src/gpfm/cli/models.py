"""``gpfm models``, ``gpfm embed`` and ``gpfm convert``: the encoder-level commands."""

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


def embed(
    images: Path = typer.Argument(
        ..., help="Folder of tile images (searched recursively) or CSV with a 'path' column."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .h5 or .safetensors."),
    encoder: str = typer.Option("gpfm", "--encoder", "-e", help="Registered encoder name (see `gpfm models`)."),
    weights: str = typer.Option(None, "--weights", help="Weights file, or 'random' (tests/timing only)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: CUDA if available)."),
    precision: str = typer.Option(None, "--precision", help="fp32, bf16 or fp16 (CUDA); default from hardware."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Image-decoding worker processes."),
) -> None:
    """Embed a folder or CSV list of tile images into one features file (names and encoder facts recorded)."""
    from gpfm.extract.images import embed_images

    res = embed_images(images, out, encoder, weights=weights, device=device, precision=precision,
                       batch_size=batch_size, workers=workers)
    typer.echo(f"wrote {res.out}: {res.n_images} x {res.dim} features"
               + (f"; {res.n_failed} unreadable images skipped (listed in the file)" if res.n_failed else ""))


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
    app.command("embed")(embed)
    app.command("convert")(convert)
