"""UNKD pretraining throughput of the tiny CPU config, with and without the expert, as JSON.

Each variant runs ``gpfm.pretrain.train.train`` in its own subprocess (so the peak RSS is its own) on the real
LC25000 tiles (``../shared/data``), logging every iteration; the first ``--warmup`` iterations are excluded.
Reported: images/s, seconds per step by phase (data, EMA teacher, experts, student forward + losses,
backward, optimizer, EMA update), data-wait fraction and peak memory.

Usage: PYTHONPATH=src python benchmarks/pretrain_throughput.py [--steps 12] [--warmup 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LC = REPO.parent / "shared" / "data" / "patches" / "lc25000_lung_224"
VARIANTS = {
    "ssl_only": ["distill.experts=[]"],
    "ssl_plus_expert": [],  # tiny_cpu: EfficientNet-Lite0 ImageNet expert (cls 1.0, patch 0.25)
}


def run_variant(name: str, steps: int, warmup: int, extra: list[str]) -> dict:
    """Train ``steps`` iterations of one variant in-process and summarise its metrics."""
    from gpfm.pretrain.config import load_config
    from gpfm.pretrain.metrics_log import read_metrics
    from gpfm.pretrain.train import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            None,
            [
                f"data.root={LC}",
                f"train.output_dir={tmp}",
                f"train.stop_at_iteration={steps}",
                "train.log_every=1",
                f"train.checkpoint_every={10**6}",
                *VARIANTS[name],
                *extra,
            ],
            preset="tiny_cpu",
        )
        train(cfg)
        records = read_metrics(Path(tmp) / "metrics.jsonl")[warmup:]
    n = len(records)
    phases = sorted({k for r in records for k in r if k.startswith("time/")})
    step = sum(sum(r[k] for k in phases) for r in records) / n
    return {
        "variant": name,
        "batch": cfg.data.batch_size_per_gpu,
        "crops": f"2x{cfg.data.global_crops_size}px + "
        f"{cfg.data.local_crops_number}x{cfg.data.local_crops_size}px",
        "student": f"{cfg.student.arch} depth={cfg.student.depth or 'preset'} patch={cfg.student.patch_size}",
        "experts": [e.name for e in cfg.distill.active_experts],
        "measured_steps": n,
        "images_per_s": round(sum(r["images_per_s"] for r in records) / n, 3),
        "step_seconds": round(step, 3),
        "phase_seconds": {
            k.removeprefix("time/"): round(sum(r.get(k, 0.0) for r in records) / n, 4) for k in phases
        },
        "data_wait_fraction": round(sum(r["data_wait_fraction"] for r in records) / n, 3),
        "peak_rss_mb": round(max(r["peak_mem_mb"] for r in records), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--override", action="append", default=[], help="extra key=value config overrides")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.single:
        print(json.dumps(run_variant(args.single, args.steps, args.warmup, args.override)))
        return
    from gpfm.runtime import machine_info

    if not LC.is_dir():
        sys.exit(f"{LC} not found: the benchmark uses the real LC25000 tiles from ../shared/data")
    results = []
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for name in args.variants.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--single",
            name,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        for o in args.override:
            cmd += ["--override", o]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {"benchmark": "pretrain_throughput", "machine": machine_info(), "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
