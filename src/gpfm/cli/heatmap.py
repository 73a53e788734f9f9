"""``gpfm heatmap``: draw any per-tile score of a slide, export it (picture, QuPath GeoJSON, TIFF, viewer)."""

from __future__ import annotations

from pathlib import Path

import typer


def heatmap(
    features: Path = typer.Argument(..., help="The slide's feature file (<slide>.h5 written by gpfm extract)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for heatmap.png/.geojson/.tif/.json and viewer/."),
    slide: Path | None = typer.Option(None, "--slide", help="The slide (default: the path recorded in FEATURES)."),
    source: str = typer.Option("similarity", "--source", help="similarity, attention, probe or h5."),
    query_image: Path | None = typer.Option(None, "--query-image", help="similarity: an image to compare with."),
    query_tile: int | None = typer.Option(None, "--query-tile", help="similarity: a tile index of this slide."),
    query_xy: str | None = typer.Option(None, "--query-xy", help="similarity: level-0 point X,Y of a tile."),
    query_geojson: Path | None = typer.Option(None, "--query-geojson", help="similarity: region drawn in QuPath."),
    attention: Path | None = typer.Option(None, "--attention", help="attention: a bench run's attention.h5."),
    model: Path | None = typer.Option(None, "--model", help="attention: a bench run's model_<fold>.pt, applied "
                                      "to this slide (any slide embedded with the same encoder)."),
    slide_id: str | None = typer.Option(None, "--slide-id", help="attention: the slide id in the task table."),
    probe_labels: Path | None = typer.Option(None, "--probe-labels", help="probe: CSV path,label of ROI images."),
    probe_class: str | None = typer.Option(None, "--probe-class", help="probe: the class whose probability."),
    scores: Path | None = typer.Option(None, "--scores", help="h5: an HDF5 file with a per-tile dataset."),
    dataset: str | None = typer.Option(None, "--dataset", help="h5: the dataset name (e.g. qc_scores)."),
    weights: str | None = typer.Option(None, "--weights", help="Weights of the encoder that made FEATURES "
                                       "(query image / probe)."),
    norm: str = typer.Option("rank", "--norm", help="rank, minmax or none (probabilities)."),
    cmap: str = typer.Option("jet", "--cmap", help="A matplotlib colour map."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Overlay opacity."),
    size: int = typer.Option(2048, "--size", min=64, help="Longer side of the picture (px)."),
    top_k: int = typer.Option(12, "--top-k", min=0, help="Tiles in the viewer's gallery."),
    formats: str = typer.Option("png,geojson,tiff,viewer", "--formats", help="Any of png,geojson,tiff,viewer."),
    viewer_max_side: int | None = typer.Option(None, "--viewer-max-side", help="Cap the viewer's resolution "
                                               "(px; default full resolution)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda ... (query image / probe)."),
) -> None:
    """Heatmap of one slide from MIL attention, a probe, similarity to a query, or any per-tile value."""
    from gpfm.errors import InputError
    from gpfm.extract import heatmaps as hm

    sf = hm.read_slide_features(features)
    if source == "similarity":
        xy = None
        if query_xy is not None:
            try:
                x, y = (float(v) for v in query_xy.split(","))
            except ValueError:
                raise InputError(f"--query-xy {query_xy!r}: give level-0 X,Y, e.g. 1024,2048") from None
            xy = (x, y)
        ts = hm.similarity_scores(sf, query_image=str(query_image) if query_image else None, query_tile=query_tile,
                                  query_xy=xy, query_geojson=str(query_geojson) if query_geojson else None,
                                  weights=weights, device=device)
    elif source == "attention" and model is not None:
        ts = _model_attention(sf, model)
    elif source == "attention":
        if attention is None:
            raise InputError("--source attention needs --model RUN/runs/<task>/<protocol>/<encoder>/model_<fold>.pt "
                             "or --attention .../attention.h5")
        ts = hm.attention_scores(sf, attention, slide_id)
    elif source == "probe":
        if probe_labels is None or probe_class is None:
            raise InputError("--source probe needs --probe-labels CSV (path,label) and --probe-class NAME")
        ts = hm.probe_scores(sf, probe_labels, probe_class, weights=weights, device=device)
    elif source == "h5":
        if scores is None or dataset is None:
            raise InputError("--source h5 needs --scores FILE.h5 and --dataset NAME")
        ts = hm.h5_scores(sf, scores, dataset)
    else:
        raise InputError(f"--source {source!r}: use similarity, attention, probe or h5")
    written = hm.render(sf, ts, out, slide_path=str(slide) if slide else None,
                        formats=tuple(f.strip() for f in formats.split(",") if f.strip()), normalization=norm,
                        cmap=cmap, alpha=alpha, size=size, top_k=top_k, viewer_max_side=viewer_max_side)
    typer.echo(f"{sf.path.stem}: {ts.label} of {len(ts.scores)} tiles ({norm} normalisation)")
    typer.echo(hm.describe(written))


def _model_attention(sf, path: Path):  # noqa: ANN001, ANN202 - SlideFeatures -> TileScores
    """Attention of a saved MIL model on this slide's features, with the model's prediction recorded."""
    import numpy as np

    from gpfm.errors import InputError
    from gpfm.eval.mil.common import apply_model, load_model
    from gpfm.extract.heatmaps import TileScores

    if not path.is_file():
        raise InputError(f"{path}: no such model file; bench runs save model_<fold>.pt next to attention.h5")
    model, record = load_model(path)
    if record["encoder"] != sf.encoder or record["in_dim"] != sf.features.shape[1]:
        raise InputError(f"{path}: trained on {record['encoder']} features ({record['in_dim']}-d), the slide has "
                         f"{sf.encoder} ({sf.features.shape[1]}-d); use features of the same encoder")
    attention, logits = apply_model(model, sf.features)
    if attention is None:
        raise InputError(f"{path}: aggregator {record['aggregator']!r} gives no per-tile attention")
    meta = {"source": "attention", "model": str(path), "aggregator": record["aggregator"], "kind": record["kind"]}
    if record["kind"] == "classification":
        p = np.exp(logits - logits.max())
        meta["prediction"] = dict(zip(record["outputs"], (p / p.sum()).round(4).tolist(), strict=True))
    return TileScores(sf.coords, attention, "attention", meta)


def register(app: typer.Typer) -> None:
    """Mount the command on the main app."""
    app.command("heatmap")(heatmap)
