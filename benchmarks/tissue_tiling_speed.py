"""Tissue detection + tiling: gpfm's default path vs the same algorithm done the straightforward way, as JSON.

TRIDENT cannot be installed from the package registry here, so the reference is its Otsu path rebuilt the
straightforward way (and said so in the output): read the whole slide at the segmentation resolution from the
level closest to it and resize, Otsu on the saturation channel, contours, one shapely polygon per component,
then every lattice tile of the slide tested one by one against every polygon (``intersection(...).area``).
gpfm's path (``segment_tissue`` + ``tile_slide``) reads strided blocks from the coarsest sufficient level and
tests only the candidates near each component with an STRtree and prepared geometries.

Both paths run ``--repeats`` times alternately; the best of each counts. The tissue coverage of the kept tiles
(:func:`gpfm.wsi.coverage.tissue_coverage`) is reported for the default tiling and for the old ``exclude`` edge
policy. Usage::

    python benchmarks/make_benchmark_slide.py --out /tmp/gpfm_bench_slide.tif
    python benchmarks/tissue_tiling_speed.py --slide /tmp/gpfm_bench_slide.tif
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import shapely

from gpfm.runtime import machine_info
from gpfm.wsi import TilingConfig, open_slide, segment_tissue, tile_slide
from gpfm.wsi.coverage import tissue_coverage

DEFAULT_SLIDE = Path("/tmp/gpfm_bench_slide.tif")


def straightforward(path: Path, seg_mpp: float = 8.0, min_fraction: float = 0.05) -> tuple[float, int]:
    """The reference path (see the module docstring): seconds and tiles kept."""
    t0 = time.perf_counter()
    slide = open_slide(path)
    scale = seg_mpp / slide.mpp
    level = slide.handle.level_dimensions.index(min(slide.level_dimensions,
                                                    key=lambda d: abs(slide.dimensions[0] / d[0] - scale)))
    w, h = slide.level_dimensions[level]
    whole = slide.read_level_region(level, 0, 0, (w, h))  # the whole level in one read
    ds = slide.level_downsamples[level]
    small = cv2.resize(whole, (round(slide.dimensions[0] / scale), round(slide.dimensions[1] / scale)),
                       interpolation=cv2.INTER_AREA)
    sat = cv2.medianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[..., 1], 7)
    _, mask = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [shapely.Polygon((c.reshape(-1, 2) + 0.5) * scale).buffer(0) for c in contours if len(c) >= 3]
    polygons = [p for p in polygons if p.area * slide.mpp ** 2 > 262_144]
    patch = round(256 * 0.5 / slide.mpp)
    kept = 0
    for y in range(0, slide.dimensions[1], patch):
        for x in range(0, slide.dimensions[0], patch):
            box = shapely.box(x, y, x + patch, y + patch)
            covered = sum(p.intersection(box).area for p in polygons)
            kept += covered / patch**2 >= min_fraction
    del ds
    return time.perf_counter() - t0, kept


def gpfm_path(path: Path) -> tuple[float, int, object, object]:
    """Gpfm's default tissue + tiling: seconds, tiles kept, the grid and the tissue."""
    t0 = time.perf_counter()
    slide = open_slide(path)
    tissue = segment_tissue(slide)
    grid = tile_slide(slide, tissue, TilingConfig())
    return time.perf_counter() - t0, len(grid), grid, tissue


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not args.slide.is_file():
        raise SystemExit(f"{args.slide}: not found; make it with benchmarks/make_benchmark_slide.py --out {args.slide}")
    ours, ref = [], []
    for _ in range(args.repeats):
        seconds, n, grid, tissue = gpfm_path(args.slide)
        ours.append(seconds)
        ref_s, ref_n = straightforward(args.slide)
        ref.append(ref_s)
    slide = open_slide(args.slide)
    old = tile_slide(slide, tissue, TilingConfig(edge_policy="exclude", min_tissue_fraction=0.25))
    report = {
        "benchmark": "tissue_tiling_speed", "slide": args.slide.name, "dimensions": list(slide.dimensions),
        "reference": "TRIDENT's Otsu path rebuilt straightforwardly (TRIDENT is not installable here)",
        "gpfm_s": [round(s, 3) for s in ours], "reference_s": [round(s, 3) for s in ref],
        "speedup_best": round(min(ref) / min(ours), 2), "gpfm_tiles": n, "reference_tiles": int(ref_n),
        "tissue_coverage_default": round(tissue_coverage(grid, tissue), 4),
        "tissue_coverage_exclude_0.25": round(tissue_coverage(old, tissue), 4),
        "machine": machine_info(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
