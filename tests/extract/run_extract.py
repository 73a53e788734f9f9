"""Subprocess entry of the extraction tests: ``python run_extract.py OUT SLIDE...`` with the tiny encoder.

Used for kill -9, concurrent-worker and torchrun tests; the shard comes from the environment (torchrun).
Environment: ``GPFM_TEST_DELAY_S`` sleeps that long per batch (so a kill lands mid-extraction).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from tiny_encoder import register  # noqa: E402


def run(out: str | Path, slides: list[str]):
    """The extraction every test process runs (tiny encoder, fp32, batch 8, in-process reads, one thread)."""
    from gpfm.extract import extract_slides

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same numerics in every process, whatever torchrun or pytest set
    try:
        return extract_slides(slides, register(), out, weights="random", device="cpu", precision="fp32",
                              batch_size=8, workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    out, slides = sys.argv[1], sys.argv[2:]
    delay = float(os.environ.get("GPFM_TEST_DELAY_S", "0"))
    if delay:
        import gpfm.extract.embed as embed_mod

        original = embed_mod.encode_uint8

        def slow(encoder, tiles):  # noqa: ANN001, ANN202
            time.sleep(delay)
            return original(encoder, tiles)

        embed_mod.encode_uint8 = slow
    summary = run(out, slides)
    print(f"RESULT {summary.run_id} {sorted(summary.counts.items())}", flush=True)


if __name__ == "__main__":
    main()
