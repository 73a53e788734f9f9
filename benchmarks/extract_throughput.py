"""End-to-end slide → features throughput vs encoder-only throughput on the same real tiles, as JSON.

For each encoder, on CMU-1-Small-Region (or ``--slide``), tiled with the ``gpfm-128um`` recipe (optionally with
``--overlap`` to get more distinct tiles from a small slide):

* ``read``: block reads + decode of every tile in this process (tiles/s; no encoder);
* ``encoder_only``: the same tiles, already decoded in memory, through ``preprocess_uint8`` + ``embed``
  (resize + normalise on the encoder device, the encoder's precision);
* ``end_to_end``: :func:`gpfm.extract.embed_slide` — DataLoader reader workers, batching, encoding;
  ``ratio = end_to_end / encoder_only`` (1.0 = reading fully hidden behind compute), best of ``--repeats``
  alternating passes; ``overlap_efficiency`` = encode time / wall time within the end-to-end pass (immune to
  load changes between passes on a shared machine); ``read_wait_s`` is the time the encoder waited for reads.

* ``readers``: the end-to-end pass's reader workers alone (block reads + QC, pinned batches copied
  non-blocking to the device, no encoder): tiles/s per worker and the workers needed for 2,500 tiles/s, the
  rate one GPU encodes GPFM at — the decode side's sizing.

Tile QC (``--qc``, default ``standard`` as in ``gpfm extract``) runs in the reader workers during the end-to-end
pass, so its cost is part of the ratio. Peak RSS of this process and of its (reader) children is reported.
On the 24k px benchmark slide (``benchmarks/make_benchmark_slide.py``)::

    python benchmarks/extract_throughput.py --slide /tmp/gpfm_bench_slide.tif --max-tiles 1024 --vit-tiles 32

Usage::

    python benchmarks/extract_throughput.py                        # gpfm (ViT-L, random) + EfficientNet-Lite0
    python benchmarks/extract_throughput.py --vit-tiles 16 --repeats 2 --out bench.json
    python benchmarks/extract_throughput.py --device cuda --precision bf16 --batch-size 256 --overlap 224
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gpfm.extract.embed import encode_uint8
from gpfm.extract.slide import embed_slide
from gpfm.models import create_encoder
from gpfm.runtime import machine_info
from gpfm.wsi import TilingConfig, open_slide, tile_slide
from gpfm.wsi.blocks import plan_blocks, read_block_tiles
from gpfm.wsi.qc import qc_preset
from gpfm.wsi.tissue import segment_tissue

DEFAULT_SLIDE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"


def _peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"peak_rss_mb": round(own, 1), "peak_rss_children_mb": round(children, 1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_all(slide, grid, block_k: int) -> tuple[torch.Tensor, float]:
    """Every tile of ``grid`` decoded in grid order, and the seconds it took."""
    t0 = time.perf_counter()
    size = int(grid.read_size_px)
    out = np.empty((len(grid), size, size, 3), dtype=np.uint8)
    for block in plan_blocks(grid, block_k):
        idx, tiles = read_block_tiles(slide, grid, block)
        out[idx] = tiles
    return torch.from_numpy(out), time.perf_counter() - t0


#: tiles/s the decode side must sustain for one GPU (spec estimate for GPFM bf16 on an H100: ~1,500–2,500)
GPU_TILES_PER_S = 2500


def _readers_only(slide, grid, args: argparse.Namespace, device: torch.device) -> float:
    """Seconds for the end-to-end pass's reader workers to deliver every tile to ``device`` with no encoder:
    block reads + QC in ``args.workers`` processes, pinned batches, non-blocking copies."""
    from gpfm.extract.dataset import tile_loader

    loader = tile_loader(slide, grid, batch_size=args.batch_size, workers=args.workers, block_k=args.block_k,
                         pin_memory=device.type == "cuda", qc=qc_preset(args.qc))
    t0 = time.perf_counter()
    for batch in loader:
        batch[0].to(device, non_blocking=True)
    _sync(device)
    return time.perf_counter() - t0


def _encoder_only(enc, tiles: torch.Tensor, batch: int) -> float:
    _sync(enc.device)
    t0 = time.perf_counter()
    for i in range(0, len(tiles), batch):
        encode_uint8(enc, tiles[i : i + batch])
    _sync(enc.device)
    return time.perf_counter() - t0


def measure(name: str, slide, grid, args: argparse.Namespace, max_tiles: int) -> dict:
    """Read / encoder-only / end-to-end numbers of one encoder on (a prefix of) ``grid``.

    Encoder-only and end-to-end passes alternate ``args.repeats`` times and the best pass of each counts, so a
    burst of load from other processes on a shared machine does not decide the ratio. ``overlap_efficiency`` =
    encode time / wall time *within* the end-to-end pass (1.0 = the encoder never waited for reads).
    """
    grid = grid.select(np.arange(min(max_tiles, len(grid)))) if max_tiles else grid
    enc = create_encoder(name, weights="random", device=args.device, precision=args.precision, verbose=False)
    tiles, read_s = read_all(slide, grid, args.block_k)
    if enc.device.type == "cuda":
        tiles = tiles.pin_memory()
    batch = args.batch_size
    encode_uint8(enc, tiles[:batch])  # warm-up: kernels, allocator
    encoder_passes, e2e_passes = [], []
    for _ in range(args.repeats):
        encoder_passes.append(_encoder_only(enc, tiles, batch))
        e2e_passes.append(embed_slide(slide, grid, enc, batch_size=batch, workers=args.workers,
                                      block_k=args.block_k, qc=qc_preset(args.qc)))
    n = len(grid)
    from gpfm.flops import compute_limit, forward_flops_per_item

    size = enc.spec.preprocess.input_size
    limit = compute_limit(forward_flops_per_item(enc.model, torch.zeros(1, 3, size, size, device=enc.device)),
                          enc.device, enc.precision)
    readers_s = min(_readers_only(slide, grid, args, enc.device) for _ in range(args.repeats))
    per_reader = n / readers_s / max(1, args.workers)  # workers=0 reads in this process: one reader
    encoder_s = min(encoder_passes)
    best = min(e2e_passes, key=lambda r: r.total_s)
    e2e, enc_only = n / best.total_s, n / encoder_s
    return {
        "encoder": name, "precision": enc.precision, "device": str(enc.device), "batch_size": batch,
        "workers": args.workers, "block_k": args.block_k, "qc": args.qc, "tiles": n,
        "read_size_px": int(grid.read_size_px),
        "model_input_px": enc.spec.preprocess.input_size, "repeats": args.repeats,
        "read_tiles_per_s": round(n / read_s, 1), "read_s": round(read_s, 3),
        "encoder_only_tiles_per_s": round(enc_only, 2), "encoder_only_s_passes": [round(t, 2) for t in encoder_passes],
        "end_to_end_tiles_per_s": round(e2e, 2), "end_to_end_s_passes": [round(r.total_s, 2) for r in e2e_passes],
        "ratio_end_to_end_vs_encoder_only": round(e2e / enc_only, 3),
        "overlap_efficiency": round(best.encode_s / best.total_s, 4),
        "e2e_read_wait_s": round(best.read_wait_s, 3), "e2e_encode_s": round(best.encode_s, 3),
        "read_s_per_encode_s": round(read_s / encoder_s, 4),
        # the decode side alone, as the end-to-end pass runs it (includes reader start-up, so a lower bound)
        "readers_tiles_per_s": round(n / readers_s, 1),
        "readers_tiles_per_s_per_worker": round(per_reader, 1),
        f"workers_for_{GPU_TILES_PER_S}_tiles_per_s": int(np.ceil(GPU_TILES_PER_S / per_reader)),
        "gflops_per_tile": round(limit["flops_per_item"] / 1e9, 3),
        "achieved_tflops_encoder_only": round(enc_only * limit["flops_per_item"] / 1e12, 3),
        "compute_limit_tiles_per_s": None if limit["compute_limit_per_s"] is None
        else round(limit["compute_limit_per_s"], 1),
        "encoder_only_fraction_of_limit": None if limit["compute_limit_per_s"] is None
        else round(enc_only / limit["compute_limit_per_s"], 3),
        "end_to_end_fraction_of_limit": None if limit["compute_limit_per_s"] is None
        else round(e2e / limit["compute_limit_per_s"], 3),
        **_peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    ap.add_argument("--encoders", default="gpfm,efficientnet-lite0-imagenet")
    ap.add_argument("--repeats", type=int, default=2, help="alternating encoder-only / end-to-end passes (best counts)")
    ap.add_argument("--vit-tiles", type=int, default=16, help="tiles for ViT encoders (0 = all); keeps CPU runs short")
    ap.add_argument("--max-tiles", type=int, default=0, help="tiles for other encoders (0 = all)")
    ap.add_argument("--overlap", type=int, default=0, help="tile overlap in px at 0.5 µm/px (more tiles per slide)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=max(1, int(0.75 * (os.cpu_count() or 1))))
    ap.add_argument("--block-k", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--qc", default="standard", help="tile QC preset in the end-to-end pass (off, standard, strict)")
    ap.add_argument("--precision", default=None, help="fp32, bf16, fp16 (default: the encoder's hardware default)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    if not args.slide.is_file():
        sys.exit(f"{args.slide}: slide not found; pass --slide PATH (e.g. the demo slide from `gpfm demo`)")
    if args.out is not None and args.out.is_dir():
        sys.exit(f"{args.out}: --out is a folder; give a file name for the JSON, e.g. {args.out / 'bench.json'}")
    slide = open_slide(args.slide)
    t0 = time.perf_counter()
    grid = tile_slide(slide, segment_tissue(slide), TilingConfig.from_recipe("gpfm-128um", overlap=args.overlap))
    tiling_s = time.perf_counter() - t0
    results = []
    for name in args.encoders.split(","):
        limit = args.vit_tiles if name in ("gpfm", "uni", "phikon", "conch") or "vit" in name else args.max_tiles
        results.append(measure(name, slide, grid, args, limit))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "extract_throughput", "slide": args.slide.name, "tiles_in_slide": len(grid),
        "segment_and_tile_s": round(tiling_s, 3), "machine": machine_info(), "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from gpfm.atomic import write_text_atomic

        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
