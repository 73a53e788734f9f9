"""Images/s of each encoder at fp32 and bf16 on this machine (random weights; synthetic inputs), as JSON.

Usage: python benchmarks/encoder_throughput.py [--encoders gpfm,uni,...] [--batch-sizes 8,32] [--seconds 6]
Every run prints the machine facts (CPU capability decides whether bf16 pays off on a CPU).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gpfm.models import create_encoder, list_encoders
from gpfm.runtime import machine_info

DEFAULT = "gpfm,uni,phikon,conch,resnet50-imagenet,efficientnet-lite0-imagenet"


def measure(name: str, precision: str, batch: int, seconds: float, device: str) -> dict:
    enc = create_encoder(name, weights="random", device=device, precision=precision, verbose=False)
    size = enc.spec.preprocess.input_size
    x = torch.randn(batch, 3, size, size)
    enc.embed(x)  # warm-up (allocations, oneDNN kernels)
    n, start = 0, time.perf_counter()
    while True:
        enc.embed(x)
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 2 * batch:
            break
    return {"encoder": name, "precision": precision, "batch": batch, "input": size,
            "images_per_s": round(n / elapsed, 2), "images": n, "seconds": round(elapsed, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--encoders", default=DEFAULT, help=f"comma list or 'all' (default {DEFAULT})")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batch-sizes", default="8,32")
    ap.add_argument("--seconds", type=float, default=6.0, help="minimum timed seconds per setting")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    names = list_encoders() if args.encoders == "all" else args.encoders.split(",")
    results = []
    for name in names:
        for precision in args.precisions.split(","):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                results.append(measure(name, precision, batch, args.seconds, args.device))
                print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"benchmark": "encoder_throughput", "machine": machine_info(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
