"""``gpfm models`` and ``gpfm convert``: the encoder-level commands, over :mod:`gpfm.models`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

models_app = typer.Typer(help="Encoders: list them (default) or verify a weights file.", no_args_is_help=False)

@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the full encoder facts as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the encoder table as Markdown (docs)."),
) -> None:
    """List registered encoders: dims, pooling, normalisation, tile recipe, default precision and weight licence."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from gpfm.models import get_encoder_spec, list_encoders

    specs = [get_encoder_spec(n) for n in list_encoders()]
    if as_json:
        typer.echo(json.dumps([s.summary() for s in specs], indent=2))
        return
    cols = ("name", "dim", "pooling", "norm", "input", "tile recipe", "half precision", "weights licence",
            "architecture")
    rows = [(s.name, str(s.embed_dim), s.pooling, s.preprocess.norm_name, str(s.preprocess.input_size),
             s.tile_recipe, "/".join(sorted(s.half_precision_ok)) or "fp32 only",
             s.weights.license + (" (gated)" if s.weights.gated else ""), s.architecture) for s in specs]
    if markdown:
        typer.echo("| " + " | ".join(cols) + " |")
        typer.echo("|" + "---|" * len(cols))
        for row in rows:
            typer.echo("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
        return
    table = Table(title="gpfm encoders")
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(width=220).print(table)


def _folder_tiles(folder: Path, n: int) -> list:
    from PIL import Image

    from gpfm.extract.images import list_images

    files = list_images(folder).paths  # a one-line error when there is none
    step = max(1, len(files) // n)
    return [Image.open(p).convert("RGB") for p in files[::step][:n]]


def _slide_tiles(slide_path: Path, recipe: str, n: int) -> list:
    """``n`` tissue tiles spread evenly over a slide, cut with the encoder's own tiling recipe."""
    import numpy as np
    from PIL import Image

    from gpfm.wsi import TilingConfig, open_slide, read_tiles, segment_tissue, tile_slide

    slide = open_slide(slide_path)
    grid = tile_slide(slide, segment_tissue(slide), TilingConfig.from_recipe(recipe))
    pick = np.unique(np.linspace(0, len(grid) - 1, num=min(n, len(grid))).round().astype(np.int64))
    return [Image.fromarray(t) for t in read_tiles(slide, grid, pick)]


@models_app.command("verify")
def verify(
    name: str = typer.Argument(..., help="Encoder name (see `gpfm models`)."),
    weights: str = typer.Option(..., "--weights", help="The weights file to verify ('random' only for testing)."),
    tiles: Path = typer.Option(None, "--tiles", help="Folder of real tile images (default: tiles of --slide)."),
    slide: Path = typer.Option(None, "--slide", help="Slide to cut tiles from (default: the embedded demo slide)."),
    n_tiles: int = typer.Option(64, "--n-tiles", min=1, help="How many tiles to measure on."),
    sha256: str = typer.Option(None, "--sha256", help="The SHA-256 the file must have (e.g. from its release)."),
    out: Path = typer.Option(None, "--out", help="Report JSON (default: verify-NAME.json here)."),
    compare: Path = typer.Option(None, "--compare", help="Another site's report: do our features match theirs?"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ..."),
) -> None:
    """Strict load, checksum, fp32-vs-half parity on real tiles and an output fingerprint, written as JSON."""
    from gpfm.atomic import write_json_atomic
    from gpfm.models import get_encoder_spec
    from gpfm.models.verify import compare_fingerprints, verify_encoder

    spec = get_encoder_spec(name)
    if tiles is not None:
        images, source = _folder_tiles(tiles, n_tiles), f"folder {tiles}"
    else:
        if slide is None:
            from gpfm.extract.demo_slide import demo_slide_path

            slide = demo_slide_path()
        images, source = _slide_tiles(slide, spec.tile_recipe, n_tiles), f"slide {slide.name} ({spec.tile_recipe})"
    report = verify_encoder(name, weights, images, device=device, expected_sha256=sha256, tile_source=source)
    if compare is not None:
        report["comparison"] = {"with": str(compare),
                                **compare_fingerprints(report, json.loads(compare.read_text()))}
        if not report["comparison"]["comparable"]:
            from gpfm.errors import InputError

            raise InputError(f"{compare}: {report['comparison']['reason']}; rerun verify with the same encoder and "
                             "the same --tiles/--slide/--n-tiles as that report")
    out = out or Path(f"verify-{name.replace(':', '_')}.json")
    write_json_atomic(out, report)
    typer.echo(f"{name}: strict load OK ({report['checkpoint_format']} layout), sha256 {report['weights_sha256']}")
    for dtype, p in report["parity"].items():
        verdict = "passes" if p["passes_gate"] else "fails"
        typer.echo(f"  {dtype} vs fp32 on {len(images)} tiles: median cosine {p['median_cosine']:.6f}, "
                   f"1st pct {p['p1_cosine']:.6f} -> {verdict} the gate")
    if "comparison" in report:
        c = report["comparison"]
        typer.echo(f"  vs {compare}: " + ("MATCH" if c["match"] else "DIFFERENT") +
                   f" (mean-embedding cosine {c['mean_embedding_cosine']:.6f})")
    typer.echo(f"report: {out}")
    if "comparison" in report and not report["comparison"]["match"]:
        raise typer.Exit(1)


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
    app.add_typer(models_app, name="models")
    app.command("convert")(convert)
