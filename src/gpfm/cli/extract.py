"""``gpfm extract``, ``gpfm embed``, ``gpfm demo``, ``gpfm wsi summarize``: argument parsing over gpfm.extract."""

from __future__ import annotations

from pathlib import Path

import typer

from gpfm.errors import EXIT_ENVIRONMENT, EXIT_INPUT, EXIT_PARTIAL

wsi_app = typer.Typer(help="Whole-slide job tools: summarize a job directory.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_INPUT)


def _seg_params(method: str, holes_are_tissue: bool, weights: str | None, device: str | None) -> dict | None:
    from gpfm.wsi.tissue import PRESETS

    params: dict = {"holes_are_tissue": True} if holes_are_tissue else {}
    if method not in PRESETS:  # a learned segmenter: its weights, on the extraction device
        params.update({"weights": weights, "device": device})
    elif weights is not None:
        _fail(f"--seg-weights is for learned segmenters; {method!r} is a threshold method")
    return params or None


def extract(
    slides: list[Path] = typer.Argument(..., help="Slide files, folders, and/or CSV manifests (slide_id,path[,mpp])."),
    encoder: str = typer.Option("gpfm", "--encoder", "-e", help="Registered encoder (see `gpfm models`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Job directory (shared safely by any number of workers)."),
    weights: str | None = typer.Option(None, help="Weights file, or 'random' for timing runs."),
    mpp: float | None = typer.Option(None, help="µm/px override for slides without a manifest mpp."),
    recipe: str = typer.Option("gpfm-128um", help="Tiling recipe: gpfm-128um, trident-112um, clam-level0-512."),
    target_mpp: float | None = typer.Option(None, help="Override the recipe's µm/px of the stored tile."),
    tile_px: int | None = typer.Option(None, help="Override the recipe's tile size (px at the target µm/px)."),
    overlap: int | None = typer.Option(None, help="Tile overlap in px at the target µm/px."),
    min_tissue_fraction: float | None = typer.Option(
        None, help="Keep tiles with at least this tissue cover (0.05: covers ≥ 99 % of the tissue)."),
    seg_method: str = typer.Option(
        "hsv", help="Tissue detection: hsv, otsu, clam-tcga, or a learned segmenter (deeplabv3-hest, "
        "deeplabv3-mobilenet)."),
    seg_weights: str | None = typer.Option(None, help="Weights of a learned segmenter (file, or 'random')."),
    holes_are_tissue: bool = typer.Option(False, help="Keep lumina/holes as tissue (TRIDENT's default)."),
    batch_size: int | None = typer.Option(None, help="Tiles per encoder batch (default: 256 on CUDA, 32 on CPU)."),
    workers: int | None = typer.Option(None, help="Reader processes (default: 0.75 × cores)."),
    block_k: int = typer.Option(4, help="Read k×k blocks of neighbouring tiles with one region read."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda:$LOCAL_RANK / cuda / cpu)."),
    precision: str | None = typer.Option(None, help="fp32, bf16, fp16 (default: the encoder's hardware default)."),
    shard: str | None = typer.Option(None, help="I/N (0-based) (default: from torchrun or Slurm-array env)."),
    steal: bool = typer.Option(True, help="After this shard's slides, take pending unlocked slides of others."),
    overwrite: bool = typer.Option(False, help="Redo slides that are already complete."),
    retry_failed: bool = typer.Option(False, help="Retry slides that failed in earlier runs."),
    skip_errors: bool = typer.Option(True, help="Record a failing slide and go on (--no-skip-errors stops)."),
    force: bool = typer.Option(False, help="Replace a different tiling configuration recorded in --out."),
    recursive: bool = typer.Option(False, help="Scan folders recursively."),
    qc: str = typer.Option("standard", help="Tile QC: standard (pen removal; ink/black tiles excluded), strict "
                           "(also background and blur), off."),
) -> None:
    """Embed every tissue tile of every slide; one TRIDENT-compatible HDF5 per slide under OUT.

    Runs tissue detection and tiling where no coordinates exist. Exit code 1 when any slide failed.
    """
    from gpfm.extract import extract_slides
    from gpfm.extract.layout import TilingConfigMismatchError
    from gpfm.extract.slides import SlideListError
    from gpfm.models import WeightsNotFoundError
    from gpfm.wsi import TilingConfig

    overrides = {k: v for k, v in {"target_mpp": target_mpp, "tile_px": tile_px, "overlap": overlap,
                                   "min_tissue_fraction": min_tissue_fraction}.items() if v is not None}
    try:
        tiling = TilingConfig.from_recipe(recipe, **overrides)
        summary = extract_slides(
            [str(s) for s in slides], encoder, out, weights=weights, tiling=tiling, seg_method=seg_method,
            seg_params=_seg_params(seg_method, holes_are_tissue, seg_weights, device), mpp=mpp,
            device=device, precision=precision, batch_size=batch_size, workers=workers, block_k=block_k,
            shard=shard, steal=steal, overwrite=overwrite, retry_failed=retry_failed, skip_errors=skip_errors,
            force=force, recursive=recursive, qc=qc,
        )
    except (SlideListError, TilingConfigMismatchError, WeightsNotFoundError, ValueError) as exc:
        _fail(str(exc))
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "nothing to do"
    typer.echo(f"run {summary.run_id} (shard {summary.shard}): {counts}; {summary.n_tiles} tiles in "
               f"{summary.seconds:.1f} s ({summary.tiles_per_s:.1f} tiles/s)")
    for s in summary.failures:
        typer.echo(f"  FAILED {s.slide_id}: {s.error_class}: {s.error}")
    for path, reason in summary.skipped_files:
        typer.echo(f"  NOT A SLIDE {path}: {reason}")
    if summary.counts.get("failed_earlier"):
        typer.echo("  (slides that failed in earlier runs were not retried; pass --retry-failed)")
    typer.echo(f"summary: {summary.summary_csv}  run record: {summary.record_path}")
    if summary.stopped:
        typer.echo(f"error: batch stopped: {summary.stopped}", err=True)
        raise typer.Exit(EXIT_ENVIRONMENT if summary.stopped_by_environment else EXIT_PARTIAL)
    if summary.failures:
        raise typer.Exit(EXIT_PARTIAL)


def demo(
    slide: Path | None = typer.Argument(None, help="A slide file (default: CMU-1-Small-Region, fetched once)."),
    out: Path = typer.Option(Path("gpfm_demo"), "--out", "-o", help="Output directory."),
    weights: str | None = typer.Option(None, help="GPFM weights (default: $GPFM_WEIGHTS / weights folder)."),
    mpp: float | None = typer.Option(None, help="µm/px, for a slide without mpp metadata."),
    device: str | None = typer.Option(None, help="cpu, cuda, ..."),
    precision: str | None = typer.Option(None, help="fp32, bf16, fp16."),
    workers: int | None = typer.Option(None, help="Reader processes."),
    overwrite: bool = typer.Option(False, help="Redo an existing result."),
) -> None:
    """Detect tissue, tile and extract features on one real slide, offline; draw the pictures."""
    from gpfm.extract.demo import run_demo
    from gpfm.extract.demo_slide import DemoSlideError
    from gpfm.models import WeightsNotFoundError

    try:
        run_demo(slide, out, weights=weights, mpp=mpp, device=device, precision=precision, workers=workers,
                 overwrite=overwrite, echo=typer.echo)
    except (DemoSlideError, WeightsNotFoundError, RuntimeError, FileNotFoundError) as exc:
        _fail(str(exc))


@wsi_app.command("summarize")
def summarize(
    job_dir: Path = typer.Argument(..., help="A job directory written by `gpfm extract`."),
    slides: list[Path] | None = typer.Option(
        None, "--slides", help="The job's slide list (files, folders, CSV) to also list slides never started."),
    recursive: bool = typer.Option(False, help="Scan --slides folders recursively."),
) -> None:
    """Aggregate state/*.json into summary.csv; print counts, failures, interrupted and never-started slides.

    Exit code 1 when any slide failed, was interrupted or never started.
    """
    from gpfm.extract.summarize import summarize_job

    report = summarize_job(job_dir, [str(s) for s in slides or []], recursive=recursive)
    typer.echo(report.headline())
    for line in report.detail_lines():
        typer.echo(f"  {line}")
    typer.echo(f"summary: {report.summary_csv}")
    if not report.ok:
        raise typer.Exit(EXIT_PARTIAL)


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


def register(app: typer.Typer) -> None:
    """Mount ``extract``, ``demo`` and the ``wsi`` group on the main app."""
    app.command("extract")(extract)
    app.command("embed")(embed)
    app.command("demo")(demo)
    app.add_typer(wsi_app, name="wsi")
