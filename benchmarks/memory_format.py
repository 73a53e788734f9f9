"""Tiles/s of each encoder with contiguous (NCHW) vs channels_last input and weights, on real tiles, as JSON.

The choice recorded in each encoder's spec (``EncoderSpec.memory_format``) comes from this measurement; the
encoder applies it itself (weights at load, inputs in ``embed``/``tokens``), so extraction, ``gpfm embed``,
the benchmark and pretraining experts all get it. Passes alternate between the two formats (best of
``--repeats``) so that load on a shared machine hits both alike; the CPU capability is printed with the numbers.

    python benchmarks/memory_format.py                      # the demo slide's tiles
    python benchmarks/memory_format.py --encoders efficientnet-lite0-imagenet,resnet50-imagenet --tiles 64
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gpfm.models import create_encoder
from gpfm.runtime import machine_info


def real_tiles(n: int) -> torch.Tensor:
    """``n`` 256-px uint8 tiles (N, H, W, 3) of the real demo slide (CMU-1-Small-Region), tissue only."""
    from gpfm.extract.demo_slide import demo_slide_path
    from gpfm.wsi import TilingConfig, open_slide, read_tiles, segment_tissue, tile_slide

    slide = open_slide(demo_slide_path())
    grid = tile_slide(slide, segment_tissue(slide), TilingConfig.from_recipe("gpfm-128um"))
    tiles = read_tiles(slide, grid)
    reps = int(np.ceil(n / len(tiles)))
    return torch.from_numpy(np.concatenate([tiles] * reps)[:n])


def tiles_per_s(enc, x: torch.Tensor, fmt: torch.memory_format, batch: int) -> float:
    """One timed pass over ``x`` (already preprocessed, NCHW) with model and input in ``fmt``."""
    enc.model.to(memory_format=fmt)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            enc.spec.forward_tokens(enc.model, x[i:i + batch].contiguous(memory_format=fmt))
    return len(x) / (time.perf_counter() - t0)


def main() -> None:
    """Measure and print JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", default="efficientnet-lite0-imagenet,resnet50-imagenet,kaiko-vits16,gpfm")
    ap.add_argument("--tiles", type=int, default=64)
    ap.add_argument("--vit-large-tiles", type=int, default=16, help="tiles for ViT-L/g-sized encoders")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tiles = real_tiles(args.tiles)
    results = []
    for name in args.encoders.split(","):
        weights = None if name == "efficientnet-lite0-imagenet" else "random"
        enc = create_encoder(name, weights=weights, device="cpu", precision="fp32", verbose=False)
        n = args.vit_large_tiles if enc.spec.embed_dim >= 1024 and enc.spec.patch_size and enc.spec.patch_size < 32 \
            else args.tiles
        x = enc.preprocess_uint8(tiles[:n]).contiguous()
        tiles_per_s(enc, x[: args.batch_size], torch.contiguous_format, args.batch_size)  # warm-up
        runs = {"contiguous": [], "channels_last": []}
        for _ in range(args.repeats):
            runs["contiguous"].append(tiles_per_s(enc, x, torch.contiguous_format, args.batch_size))
            runs["channels_last"].append(tiles_per_s(enc, x, torch.channels_last, args.batch_size))
        best = {k: max(v) for k, v in runs.items()}
        results.append({"encoder": name, "tiles": n, "tiles_per_s": {k: round(v, 2) for k, v in best.items()},
                        "channels_last_speedup": round(best["channels_last"] / best["contiguous"], 3),
                        "spec_memory_format": enc.spec.memory_format})
    print(json.dumps({"machine": machine_info(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
