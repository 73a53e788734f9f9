"""Heatmaps of a slide from any per-tile score, and every export of them (``gpfm heatmap``).

Score sources (each returns tile coordinates and one float per tile, aligned):

* ``similarity`` — cosine similarity of every tile's feature to a query: an image file embedded with the
  encoder that made the features (its weights must be the ones recorded in the file), a tile of the slide
  (index or a level-0 point), or a region drawn in QuPath (GeoJSON: the mean feature of the tiles whose centre
  lies inside);
* ``attention`` — the MIL attention a ``wsi.*``/``surv.*`` protocol saved in a bench run (``attention.h5``);
  case-level bags are split back into their slides with the recorded member sizes;
* ``probe`` — the probability of one class from a logistic-regression probe trained on labelled ROI images
  (``path,label`` CSV) embedded with the same encoder and weights, applied to every tile;
* ``h5`` — any per-tile dataset of an HDF5 file (e.g. ``qc_scores``), row-aligned with the features' coords.

Exports (:func:`render`): the picture (overlay + legend), QuPath GeoJSON detections with the score as a
measurement, a pyramidal TIFF of the overlay, the viewer folder, and ``heatmap.json`` recording all of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gpfm.errors import InputError

FORMATS = ("png", "geojson", "tiff", "viewer")


@dataclass
class TileScores:
    """Scores of a slide's tiles.

    Attributes:
        coords: (N, 2) level-0 top-left corners.
        scores: (N,) raw scores.
        label: what a score is (legend, GeoJSON measurement name).
        meta: provenance of the scores.
    """

    coords: np.ndarray
    scores: np.ndarray
    label: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SlideFeatures:
    """One slide's feature file: tiles, features and the facts needed to draw them."""

    path: Path
    coords: np.ndarray
    features: np.ndarray
    tile_size_level0: float
    slide_size: tuple[int, int]
    slide_path: str
    encoder: str
    weights_sha256: str
    mpp: float


def read_slide_features(path: str | os.PathLike[str]) -> SlideFeatures:
    """The coords, features and tiling facts of a ``gpfm extract`` feature file (checksum verified)."""
    from gpfm.hashing import verify_array
    from gpfm.wsi import read_features

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such feature file; pass a <slide>.h5 written by gpfm extract")
    try:
        stored = read_features(path)
    except (KeyError, OSError) as exc:
        raise InputError(f"{path}: not a gpfm feature file ({exc}); pass a <slide>.h5 written by gpfm extract") from exc
    feats, coords, c, f = stored["features"], stored["coords"], stored["coords_attrs"], stored["attrs"]
    if coords is None:
        raise InputError(f"{path}: no 'coords' dataset; pass a feature file written by gpfm extract")
    verify_array(path, feats, f.get("features_sha256"), fix="delete it and rerun `gpfm extract`")
    tile = float(c.get("tile_size_level0_exact", c.get("patch_size_level0", 0)))
    size = (int(c.get("level0_width", 0)), int(c.get("level0_height", 0)))
    info = (str(c.get("slide_relpath", "")), str(f.get("encoder", "")), str(f.get("weights_sha256", "")),
            float(c.get("mpp_level0_x", 0.0)))
    if not len(feats):
        raise InputError(f"{path}: the slide has no tissue tiles (empty features): nothing to draw")
    if tile <= 0 or min(size) <= 0:
        raise InputError(f"{path}: no tile size / slide size recorded on 'coords'; re-extract with gpfm extract")
    return SlideFeatures(path, np.asarray(coords), np.asarray(feats, dtype=np.float32), tile, size, *info)


def _cosine(features: np.ndarray, query: np.ndarray) -> np.ndarray:
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    return f @ q


def _encoder_for(sf: SlideFeatures, weights: str | None, device: str | None):
    """The encoder that made ``sf``, with the same weights (refused otherwise: the scores would be meaningless)."""
    from gpfm.models import create_encoder

    if not sf.encoder:
        raise InputError(f"{sf.path}: no encoder recorded on 'features'; re-extract with gpfm extract")
    enc = create_encoder(sf.encoder, weights=weights, device=device, precision="fp32", verbose=False)
    if sf.weights_sha256 and enc.weights_sha256 != sf.weights_sha256:
        raise InputError(f"{sf.path}: features were made with {sf.encoder} weights {sf.weights_sha256[:12]}, the "
                         f"weights given are {enc.weights_sha256[:12]}; pass the same --weights")
    return enc


def _embed_images(enc, paths: list[Path]) -> np.ndarray:
    import torch
    from PIL import Image

    out = []
    for i in range(0, len(paths), 32):
        batch = torch.stack([enc.transform(Image.open(p).convert("RGB")) for p in paths[i:i + 32]])
        out.append(enc.embed(batch.to(enc.device)).float().cpu().numpy())
    return np.concatenate(out)


def similarity_scores(sf: SlideFeatures, *, query_image: str | None = None, query_tile: int | None = None,
                      query_xy: tuple[float, float] | None = None, query_geojson: str | None = None,
                      weights: str | None = None, device: str | None = None) -> TileScores:
    """Cosine similarity of every tile to exactly one kind of query (see the module docstring)."""
    given = [q is not None for q in (query_image, query_tile, query_xy, query_geojson)]
    if sum(given) != 1:
        raise InputError("similarity needs exactly one query: --query-image, --query-tile, --query-xy or "
                         "--query-geojson")
    if query_image is not None:
        path = Path(query_image)
        if not path.is_file():
            raise InputError(f"{path}: no such query image")
        query = _embed_images(_encoder_for(sf, weights, device), [path])[0]
        what = f"query image {path.name}"
    elif query_geojson is not None:
        from shapely.geometry import Point

        from gpfm.wsi import read_geojson

        region = read_geojson(query_geojson)
        centres = sf.coords + sf.tile_size_level0 / 2
        inside = np.array([region.contains(Point(float(x), float(y))) for x, y in centres])
        if not inside.any():
            raise InputError(f"{query_geojson}: no tile centre lies inside its region(s); draw it over tissue tiles")
        query = sf.features[inside].mean(axis=0)
        what = f"region of {Path(query_geojson).name} ({int(inside.sum())} tiles)"
    else:
        if query_xy is not None:
            x, y = query_xy
            hit = np.flatnonzero((sf.coords[:, 0] <= x) & (x < sf.coords[:, 0] + sf.tile_size_level0)
                                 & (sf.coords[:, 1] <= y) & (y < sf.coords[:, 1] + sf.tile_size_level0))
            if not len(hit):
                raise InputError(f"no tile covers level-0 point ({x:g}, {y:g}) of {sf.path.name}")
            centres = sf.coords[hit] + sf.tile_size_level0 / 2  # overlapping tiles: the one centred nearest
            query_tile = int(hit[np.argmin(np.hypot(centres[:, 0] - x, centres[:, 1] - y))])
        if not 0 <= query_tile < len(sf.coords):
            raise InputError(f"--query-tile {query_tile}: the slide has tiles 0..{len(sf.coords) - 1}")
        query = sf.features[query_tile]
        what = f"tile {query_tile} at ({sf.coords[query_tile][0]:g}, {sf.coords[query_tile][1]:g})"
    return TileScores(sf.coords, _cosine(sf.features, query), "cosine similarity",
                      {"source": "similarity", "query": what, "encoder": sf.encoder})


def attention_scores(sf: SlideFeatures, attention_h5: str | os.PathLike[str], slide_id: str | None = None
                     ) -> TileScores:
    """The attention a MIL protocol saved for this slide (a slide bag, or this slide's part of a case bag)."""
    path = Path(attention_h5)
    coords_path = path.with_name(path.stem + "_coords.h5")
    if not path.is_file() or not coords_path.is_file():
        raise InputError(f"{path}: needs attention.h5 and attention_coords.h5 of a bench run's wsi.*/surv.* protocol "
                         "(runs/<task>/<protocol>/<encoder>/)")
    sid = slide_id or sf.path.stem
    with h5py.File(path, "r") as fa, h5py.File(coords_path, "r") as fc:
        if sid in fa:
            return TileScores(np.asarray(fc[sid]), np.asarray(fa[sid]), "attention",
                              {"source": "attention", "file": str(path), "bag": sid})
        for bag in fa:
            members = [m.decode() if isinstance(m, bytes) else str(m) for m in fa[bag].attrs.get("members", [])]
            stems = [Path(m).stem for m in members]
            if sid in members or sid in stems:
                k = members.index(sid) if sid in members else stems.index(sid)
                sizes = np.asarray(fa[bag].attrs["member_sizes"], dtype=np.int64)
                lo, hi = int(sizes[:k].sum()), int(sizes[: k + 1].sum())
                return TileScores(np.asarray(fc[bag])[lo:hi], np.asarray(fa[bag])[lo:hi], "attention",
                                  {"source": "attention", "file": str(path), "bag": bag, "slide": sid,
                                   "note": "this slide's rows of a case-level bag"})
    raise InputError(f"{path}: no attention for slide {sid!r} (it was not a test bag of that run); pass --slide-id "
                     "with the id the task's label table uses")


def probe_scores(sf: SlideFeatures, labels_csv: str | os.PathLike[str], positive: str, *,
                 weights: str | None = None, device: str | None = None) -> TileScores:
    """P(``positive``) of a logistic-regression probe trained on the labelled images of ``labels_csv``."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    csv = Path(labels_csv)
    table = pd.read_csv(csv)
    if not {"path", "label"} <= set(table.columns):
        raise InputError(f"{csv}: needs columns path,label (paths relative to the CSV's folder)")
    names = sorted(table["label"].astype(str).unique())
    if positive not in names or len(names) < 2:
        raise InputError(f"{csv}: --probe-class {positive!r} must be one of at least two labels {names}")
    paths = [(csv.parent / p) for p in table["path"]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{csv}: {len(missing)} image(s) not found (e.g. {missing[0]})")
    x = _embed_images(_encoder_for(sf, weights, device), paths)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=0))
    clf.fit(x, table["label"].astype(str))
    k = list(clf.classes_).index(positive)
    p = clf.predict_proba(sf.features)[:, k]
    return TileScores(sf.coords, p, f"P({positive})",
                      {"source": "probe", "labels": str(csv), "classes": names, "n_train": len(table),
                       "probe": "StandardScaler + LogisticRegression(C=1, max_iter=2000)"})


def h5_scores(sf: SlideFeatures, path: str | os.PathLike[str], dataset: str) -> TileScores:
    """A per-tile dataset of an HDF5 file, row-aligned with the slide's coords.

    ``dataset`` is ``NAME`` for a (N,) dataset, or ``NAME:COLUMN`` (index, or a name listed in the dataset's
    ``columns`` attribute) for one column of an (N, K) one, e.g. ``qc_scores:sharpness``.
    """
    path = Path(path)
    name, _, column = dataset.partition(":")
    with h5py.File(path, "r") as fh:
        if name not in fh:
            raise InputError(f"{path}: no dataset {name!r} (has {', '.join(sorted(fh))})")
        values = np.asarray(fh[name], dtype=np.float64)
        columns = [c.decode() if isinstance(c, bytes) else str(c) for c in fh[name].attrs.get("columns", [])]
        if not columns and name.endswith("qc_scores"):  # gpfm's tile-QC figures (gpfm.wsi.qc)
            from gpfm.wsi.qc import SCORE_COLUMNS

            columns = list(SCORE_COLUMNS)
        coords = np.asarray(fh["coords"]) if "coords" in fh else sf.coords
    values = values.reshape(len(values), -1)
    if column:
        k = columns.index(column) if column in columns else int(column) if column.isdigit() else -1
        if not 0 <= k < values.shape[1]:
            known = columns or list(range(values.shape[1]))
            raise InputError(f"{path}:{name} has no column {column!r} (columns: {known})")
        values = values[:, k:k + 1]
    if values.shape[1] != 1 or len(values) != len(coords):
        hint = f"; pick a column: {name}:0..{values.shape[1] - 1}" + (f" or {name}:{columns[0]}" if columns else "")
        raise InputError(f"{path}:{name} has shape {values.shape}; one value per tile ({len(coords)}) expected"
                         + (hint if values.shape[1] > 1 else ""))
    return TileScores(coords, values[:, 0], dataset, {"source": "h5", "file": str(path), "dataset": dataset})


def render(sf: SlideFeatures, ts: TileScores, out_dir: str | os.PathLike[str], *, slide_path: str | None = None,
           formats: tuple[str, ...] = FORMATS, normalization: str = "rank", cmap: str = "jet", alpha: float = 0.5,
           size: int = 2048, top_k: int = 12, viewer_max_side: int | None = None) -> dict[str, Path]:
    """Draw ``ts`` on the slide and write the requested exports into ``out_dir``; returns what was written."""
    from PIL import Image

    from gpfm.atomic import atomic_path, write_json_atomic
    from gpfm.wsi import open_slide
    from gpfm.wsi.heatmap import make_heatmap, normalize_scores, overlay_image, scores_to_geojson, write_geojson
    from gpfm.wsi.pyramid import write_pyramidal_tiff

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise InputError(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    slide_file = Path(slide_path or sf.slide_path)
    if not slide_file.is_file():
        raise InputError(f"slide {slide_file} not found (recorded in {sf.path.name}); pass --slide")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder for the heatmap outputs")
    out.mkdir(parents=True, exist_ok=True)
    meta = {**ts.meta, "features": str(sf.path), "slide": str(slide_file), "n_tiles": len(ts.scores)}
    hm = make_heatmap(ts.coords, ts.scores, sf.tile_size_level0, sf.slide_size, max_side=size,
                      normalization=normalization, label=ts.label, cmap=cmap, meta=meta)
    s01 = normalize_scores(ts.scores, normalization)
    written: dict[str, Path] = {}
    with open_slide(slide_file, mpp=sf.mpp or None) as slide:
        thumb = slide.read_scaled(hm.scale)[: hm.values.shape[0], : hm.values.shape[1]]
        if "png" in formats:
            written["png"] = out / "heatmap.png"
            with atomic_path(written["png"]) as tmp:
                Image.fromarray(overlay_image(thumb, hm, alpha)).save(tmp, format="PNG")
        if "geojson" in formats:
            written["geojson"] = write_geojson(out / "heatmap.geojson",
                                               scores_to_geojson(ts.coords, sf.tile_size_level0, ts.scores, ts.label,
                                                                 s01))
        if "tiff" in formats:
            written["tiff"] = write_pyramidal_tiff(out / "heatmap.tif", overlay_image(thumb, hm, alpha, legend=False),
                                                   mpp=(sf.mpp or slide.mpp) * hm.scale)
        if "viewer" in formats:
            written["viewer"] = write_viewer_for(slide, out / "viewer", hm, ts, s01, sf, top_k, viewer_max_side,
                                                 alpha)
    written["record"] = out / "heatmap.json"
    write_json_atomic(written["record"], {**hm.record(), "outputs": {k: str(v) for k, v in written.items()}})
    return written


def write_viewer_for(slide, folder: Path, hm, ts: TileScores, s01: np.ndarray, sf: SlideFeatures, top_k: int,
                     max_side: int | None, alpha: float) -> Path:
    """The viewer folder for a rendered heatmap (see :mod:`gpfm.wsi.viewer`)."""
    from gpfm.wsi.viewer import write_viewer

    return write_viewer(slide, folder, hm, ts.coords, ts.scores, s01, sf.tile_size_level0, top_k=top_k,
                        title=f"{Path(sf.slide_path).name or sf.path.stem}: {ts.label}", opacity=alpha,
                        max_side=max_side)


def describe(written: dict[str, Path]) -> str:
    """One line per output, for the CLI."""
    return "\n".join(f"  {k:<8} {v}" for k, v in written.items())


def load_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``heatmap.json``."""
    return json.loads(Path(path).read_text())
