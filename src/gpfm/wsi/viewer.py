"""A self-contained slide viewer: one folder, opened from disk with no server and no network.

``index.html`` shows the slide as a deep-zoom image (OpenSeadragon, vendored from npm with its BSD licence in
``gpfm/wsi/vendor/openseadragon``) with the heatmap as a layer that can be toggled and made more or less opaque,
the tile score under the mouse, and the top-k tiles as a gallery (click: zoom there). Everything the page needs
is in the folder: the DZI tiles, ``heatmap.png``, ``tiles.js`` (tile boxes and scores), the gallery JPEGs and
the library. The page records its own health on ``<body data-viewer-check>`` (opened, layers drawn, errors) so
a headless browser can check it; ``#overlay=off`` in the URL starts with the layer hidden.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gpfm.errors import InputError
from gpfm.wsi.deepzoom import write_deepzoom
from gpfm.wsi.heatmap import Heatmap, colorize

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ margin: 0; font: 14px system-ui, sans-serif; display: grid; grid-template-columns: 1fr 300px;
       grid-template-rows: auto 1fr; height: 100vh; }}
header {{ grid-column: 1 / 3; padding: 6px 12px; background: #263238; color: #fff; display: flex; gap: 16px;
          align-items: center; flex-wrap: wrap; }}
#view {{ background: #000; }}
aside {{ overflow-y: auto; padding: 8px; border-left: 1px solid #ccc; }}
#hover {{ font-variant-numeric: tabular-nums; min-width: 16em; }}
.gal {{ display: grid; grid-template-columns: 1fr 1fr; gap: 6px; }}
.gal figure {{ margin: 0; cursor: pointer; }} .gal img {{ width: 100%; display: block; }}
.gal figcaption {{ font-size: 12px; }}
#legend img {{ width: 100%; }}
</style></head>
<body data-viewer-check="{{&quot;ok&quot;: false, &quot;stage&quot;: &quot;loading&quot;}}">
<header><b>{title}</b>
<label><input type="checkbox" id="show" checked> heatmap</label>
<label>opacity <input type="range" id="opacity" min="0" max="100" value="{opacity}"></label>
<span id="hover">move over the slide</span></header>
<div id="view"></div>
<aside><div id="legend"><img src="legend.png" alt="legend"></div><p>{description}</p>
<h3>Top {k} tiles</h3><div class="gal" id="gallery">{gallery}</div>
<p style="font-size:12px">Viewer: OpenSeadragon {osd_version} (BSD-3-Clause, see LICENSE-openseadragon.txt).</p>
</aside>
<script src="openseadragon.min.js"></script>
<script src="tiles.js"></script>
<script>
(function () {{
  var errors = [], state = {{opened: 0, drawn: 0}};
  function report(stage) {{
    var overlay = viewer && viewer.world.getItemCount() > 1 ? viewer.world.getItemAt(1).getOpacity() : null;
    document.body.dataset.viewerCheck = JSON.stringify({{ok: errors.length === 0 && state.opened === 2,
      stage: stage, items: viewer ? viewer.world.getItemCount() : 0, drawn: state.drawn,
      overlayOpacity: overlay, tiles: GPFM.tiles.length, errors: errors}});
  }}
  window.addEventListener("error", function (e) {{ errors.push(String(e.message || e)); report("error"); }});
  var viewer = OpenSeadragon({{id: "view", prefixUrl: "", showNavigationControl: false, drawer: "canvas",
    crossOriginPolicy: false, tileSources: [GPFM.slide,
      {{tileSource: {{type: "image", url: "heatmap.png"}}, x: 0, y: 0, width: 1, opacity: GPFM.opacity}}]}});
  var show = document.getElementById("show"), opacity = document.getElementById("opacity");
  function apply() {{
    if (viewer.world.getItemCount() < 2) return;
    viewer.world.getItemAt(1).setOpacity(show.checked ? opacity.value / 100 : 0);
    report("layer");
  }}
  window.gpfmToggle = function (on) {{ show.checked = on === undefined ? !show.checked : on; apply(); }};
  show.addEventListener("change", apply); opacity.addEventListener("input", apply);
  viewer.world.addHandler("add-item", function () {{
    state.opened = viewer.world.getItemCount();
    if (state.opened === 2) {{
      if (location.hash.indexOf("overlay=off") >= 0) show.checked = false;
      apply(); report("opened");
    }}
  }});
  viewer.addHandler("open-failed", function (e) {{ errors.push("open-failed: " + e.message); report("error"); }});
  viewer.addHandler("tile-load-failed", function (e) {{ errors.push("tile-load-failed"); report("error"); }});
  viewer.addHandler("tile-drawn", function () {{ state.drawn += 1; report("drawn"); }});
  // tile under the mouse: bucket the tiles by their grid cell for an O(1) lookup
  var cell = GPFM.tile_size, buckets = {{}};
  GPFM.tiles.forEach(function (t, i) {{
    var key = Math.floor(t[0] / cell) + "," + Math.floor(t[1] / cell);
    (buckets[key] = buckets[key] || []).push(i);
  }});
  new OpenSeadragon.MouseTracker({{element: viewer.element, moveHandler: function (e) {{
    var img = viewer.viewport.viewerElementToImageCoordinates(e.position);
    var x = img.x * GPFM.level0_per_px, y = img.y * GPFM.level0_per_px, found = null;
    var cx = Math.floor(x / cell), cy = Math.floor(y / cell);
    for (var dx = -1; dx <= 0 && found === null; dx++) for (var dy = -1; dy <= 0 && found === null; dy++) {{
      (buckets[(cx + dx) + "," + (cy + dy)] || []).forEach(function (i) {{
        var t = GPFM.tiles[i];
        if (x >= t[0] && x < t[0] + GPFM.tile_size && y >= t[1] && y < t[1] + GPFM.tile_size) found = i;
      }});
    }}
    document.getElementById("hover").textContent = found === null ? "no tile here" :
      GPFM.label + " " + GPFM.tiles[found][2].toPrecision(4) + " (normalised " +
      GPFM.tiles[found][3].toFixed(3) + ") at x=" + Math.round(GPFM.tiles[found][0]) + ", y=" +
      Math.round(GPFM.tiles[found][1]);
  }}}});
  window.gpfmGoto = function (i) {{
    var t = GPFM.tiles[i], s = GPFM.level0_per_px;
    viewer.viewport.fitBounds(viewer.viewport.imageToViewportRectangle(t[0] / s, t[1] / s,
      GPFM.tile_size / s, GPFM.tile_size / s));
  }};
  report("started");
}})();
</script></body></html>
"""


def _vendor_dir() -> Path:
    return Path(str(files("gpfm.wsi") / "vendor" / "openseadragon"))


def write_viewer(slide, out_dir: str | os.PathLike[str], heatmap: Heatmap, coords: np.ndarray,
                 scores: np.ndarray, scores01: np.ndarray, tile_size_level0: float, *, top_k: int = 12,
                 title: str = "gpfm heatmap", legend_png: np.ndarray | None = None, opacity: float = 0.5,
                 max_side: int | None = None) -> Path:
    """Write the viewer folder for ``slide`` and return its ``index.html``.

    Args:
        slide: a :class:`gpfm.wsi.Slide`.
        out_dir: the folder to write (created; an existing viewer there is replaced).
        heatmap: the rasterised heatmap (its colours become the layer).
        coords: (N, 2) level-0 tile top-left corners.
        scores: (N,) raw tile scores (shown on hover).
        scores01: (N,) normalised scores (ranked for the gallery).
        tile_size_level0: tile side in level-0 px.
        top_k: tiles in the gallery.
        title: page title.
        legend_png: the legend strip to show (default: drawn from the heatmap).
        opacity: initial layer opacity.
        max_side: cap the deep-zoom resolution (None: full resolution).
    """
    final = Path(out_dir)
    if final.exists() and not (final / "tiles.js").is_file():
        raise InputError(f"{final}: exists and is not a gpfm viewer; move it away or choose another --out")
    # built beside, renamed into place at the end: an interrupted run never leaves a half viewer behind
    out = final.with_name(final.name + ".partial")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        _fill(out, slide, heatmap, coords, scores, scores01, tile_size_level0, top_k, title, legend_png, opacity,
              max_side)
    except BaseException:  # Ctrl-C or a failure: no partial folder left behind
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    out.rename(final)
    return final / "index.html"


def _fill(out: Path, slide, heatmap: Heatmap, coords: np.ndarray, scores: np.ndarray, scores01: np.ndarray,
          tile_size_level0: float, top_k: int, title: str, legend_png: np.ndarray | None, opacity: float,
          max_side: int | None) -> None:
    """Write every file of the viewer into ``out`` (see :func:`write_viewer`)."""
    from gpfm.wsi.heatmap import _legend

    dz = write_deepzoom(slide, out, "slide", max_side=max_side)
    Image.fromarray(colorize(heatmap)).save(out / "heatmap.png")
    w = int(np.clip(heatmap.values.shape[1], 320, 600))
    Image.fromarray(legend_png if legend_png is not None else _legend(w, heatmap)).save(out / "legend.png")
    vendor = _vendor_dir()
    shutil.copy(vendor / "openseadragon.min.js", out / "openseadragon.min.js")
    shutil.copy(vendor / "LICENSE.txt", out / "LICENSE-openseadragon.txt")
    osd_version = (vendor / "VERSION").read_text().split()[1]
    order = np.argsort(-np.asarray(scores01), kind="stable")[:top_k]
    (out / "gallery").mkdir()
    figures = []
    side = int(round(tile_size_level0))
    for rank, i in enumerate(order.tolist(), start=1):
        x, y = (float(v) for v in coords[i])
        crop = slide.read_region(x, y, 0, (side, side))
        thumb = Image.fromarray(crop).resize((192, 192), Image.Resampling.LANCZOS)
        thumb.save(out / "gallery" / f"top{rank:02d}.jpg", quality=88)
        figures.append(f'<figure onclick="gpfmGoto({i})"><img src="gallery/top{rank:02d}.jpg" alt="tile {i}">'
                       f"<figcaption>#{rank}: {html.escape(heatmap.label)} {float(scores[i]):.4g}</figcaption>"
                       "</figure>")
    data: dict[str, Any] = {
        "slide": dz.tile_source("slide_files/"),
        "tiles": [[float(c[0]), float(c[1]), float(s), float(n)] for c, s, n in zip(coords, scores, scores01,
                                                                                      strict=True)],
        "tile_size": float(tile_size_level0),
        "level0_per_px": dz.level0_per_px,
        "label": heatmap.label,
        "opacity": float(opacity),
        "record": heatmap.record(),
    }
    (out / "tiles.js").write_text("window.GPFM = " + json.dumps(data) + ";\n")
    description = html.escape(f"{heatmap.label}: {heatmap.normalization} normalisation, raw "
                              f"{heatmap.raw_range[0]:.4g} to {heatmap.raw_range[1]:.4g}, {len(coords)} tiles, "
                              "overlapping tiles averaged.")
    page = out / "index.html"
    page.write_text(_PAGE.format(title=html.escape(title), opacity=int(opacity * 100), description=description,
                                 k=len(order), gallery="".join(figures), osd_version=osd_version))
