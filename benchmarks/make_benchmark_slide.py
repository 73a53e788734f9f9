"""Make a realistic benchmark slide: a 20k–30k px pyramidal TIFF mosaicked from real CMU-1-Small-Region pixels.

The small real slides hold 40–80 tiles, too few to time anything. This script lays copies of the real
CMU-1-Small-Region pixels (each flipped and/or rotated by a seeded choice) on a grid over the slide's own
background colour, with white gaps between the pieces, and pushes the first and last row and column of pieces
past the slide's edges so that tissue touches all four edges (the case edge tiling must handle). The result is
written as a tiled, JPEG-compressed pyramidal TIFF with resolution tags at the source's 0.499 µm/px, which
OpenSlide and tiffslide read without ``--mpp``. Prints a JSON line describing the slide.

    python benchmarks/make_benchmark_slide.py --out /tmp/gpfm_bench_slide.tif             # 24,000 px square
    python benchmarks/make_benchmark_slide.py --out big.tif --width 30000 --height 20000 --seed 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gpfm.wsi import open_slide
from gpfm.wsi.pyramid import write_pyramidal_tiff
from gpfm.wsi.tissue import segment_tissue

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"


def _piece(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The source pixels under a seeded flip/rotation (the 8 symmetries of the square)."""
    out = np.rot90(rgb, k=int(rng.integers(4)))
    if rng.integers(2):
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def mosaic(source: np.ndarray, width: int, height: int, background: tuple[int, int, int], gap: int,
           seed: int) -> tuple[np.ndarray, int]:
    """Lay transformed copies of ``source`` on a grid; the outer pieces hang past the edges. Returns (image, n)."""
    rng = np.random.default_rng(seed)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = background
    cell = max(source.shape[:2]) + gap
    overhang = cell // 3  # the first row/column starts outside the slide, the last one ends outside it
    n = 0
    for y0 in range(-overhang, height, cell):
        for x0 in range(-overhang, width, cell):
            piece = _piece(source, rng)
            ph, pw = piece.shape[:2]
            oy, ox = y0 + int(rng.integers(0, cell - ph + 1)), x0 + int(rng.integers(0, cell - pw + 1))
            ys, xs = max(0, oy), max(0, ox)
            ye, xe = min(height, oy + ph), min(width, ox + pw)
            if ye <= ys or xe <= xs:
                continue
            region = piece[ys - oy:ye - oy, xs - ox:xe - ox]
            # paste only the piece's own non-background pixels, so neighbouring glass stays one colour
            glass = (np.abs(region.astype(np.int16) - np.array(background, np.int16)).max(axis=2) < 12)
            target = canvas[ys:ye, xs:xe]
            target[~glass] = region[~glass]
            n += 1
    return canvas, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=Path("/tmp/gpfm_bench_slide.tif"))
    ap.add_argument("--width", type=int, default=24000)
    ap.add_argument("--height", type=int, default=24000)
    ap.add_argument("--gap", type=int, default=400, help="white (glass) px between neighbouring pieces")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not 4000 <= args.width <= 60000 or not 4000 <= args.height <= 60000:
        raise SystemExit("--width/--height must be between 4,000 and 60,000 px")
    slide = open_slide(args.source)
    source = slide.read_scaled(1.0)
    background = segment_tissue(slide).background_rgb
    t0 = time.perf_counter()
    image, pieces = mosaic(source, args.width, args.height, background, args.gap, args.seed)
    made = time.perf_counter() - t0
    write_pyramidal_tiff(args.out, image, slide.mpp)
    print(json.dumps({
        "benchmark_slide": str(args.out), "width": args.width, "height": args.height, "mpp": slide.mpp,
        "pieces": pieces, "source": args.source.name, "background_rgb": list(background), "seed": args.seed,
        "bytes": args.out.stat().st_size, "seconds": round(time.perf_counter() - t0, 1),
        "mosaic_seconds": round(made, 1),
    }))


if __name__ == "__main__":
    main()
