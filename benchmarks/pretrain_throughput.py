"""UNKD pretraining throughput of the tiny CPU config, with and without the expert, as JSON.

Each variant runs ``gpfm.pretrain.train.train`` in its own subprocess (so the peak RSS is its own) on the real
LC25000 tiles (``../shared/data``), logging every iteration; the first ``--warmup`` iterations are excluded.
Reported: images/s, seconds per step by phase (data, EMA teacher, experts, student forward + losses,
backward, optimizer, EMA update), data-wait fraction, peak memory, and the **compute floor**: the same model
work on the same crops in plain torch, measured in the same process right after training (teacher forward, each
live expert's forward, student forward + backward of a plain sum; no data loading, losses, optimizer or EMA),
and ``step_over_floor`` = step seconds ÷ floor seconds. ``ssl_plus_expert_cached`` reads the expert's targets
from the cache (``distill.expert_targets=cached``): its floor has no expert forward.

On a machine whose cores all run the model (``num_workers 0``, or workers competing with torch's threads), the
augmentation is extra CPU work that no pipeline can hide; give the loader workers cores of their own to see
what the pipeline does when the compute has its own device or cores (``--compute-threads``)::

    PYTHONPATH=src python benchmarks/pretrain_throughput.py [--steps 12] [--warmup 2] [--out FILE]
    PYTHONPATH=src python benchmarks/pretrain_throughput.py --override data.num_workers=1 --compute-threads 1
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
    "ssl_plus_expert_cached": ["distill.expert_view=clean", "distill.expert_targets=cached"],
}


def compute_floor(cfg, steps: int, warmup: int) -> float:
    """Mean seconds of the step's model compute on the run's own first batches, in plain torch.

    The teacher forward (no grad), every live expert's forward and the student's forward + backward of the
    sum of its outputs, on the batches the run drew (same seed, same crops, same masks).
    """
    import time

    import torch

    from gpfm.pretrain.dist import DistInfo
    from gpfm.pretrain.meta_arch import MetaArch, build_experts
    from gpfm.pretrain.train import _seed_everything, batch_stream, iteration_masks

    device = torch.device("cpu")
    _seed_everything(cfg.train.seed, 0)
    live = cfg.distill.expert_targets == "live"
    experts = build_experts(cfg, device) if live else {}
    meta = MetaArch(cfg, device, experts=experts or None) if live else None
    info = DistInfo(device=device)
    if meta is None:  # cached targets: the floor has no expert forward; heads sized as in the run
        from gpfm.pretrain.train import _cached_experts, build_dataset

        meta = MetaArch(cfg, device, experts=_cached_experts(cfg, info, None, build_dataset(cfg)))
    stream = batch_stream(cfg, info, 0)
    # all batches drawn before timing: with data.num_workers > 0 the loader's workers would otherwise still be
    # augmenting while the floor is timed and take cores from it
    batches = [next(stream) for _ in range(steps)]
    del stream
    meta.student.train()
    times = []
    for it, batch in enumerate(batches):
        masks = iteration_masks(cfg, 0, it, batch["global_crops"].shape[0])
        t0 = time.perf_counter()
        with torch.no_grad():
            meta.teacher(batch["global_crops"], masks)
        crops = batch["global_crops_clean"] if cfg.distill.expert_view == "clean" else batch["global_crops"]
        for expert in (meta.experts.values() if live else ()):
            expert(crops)
        out = meta.student(batch["global_crops"], batch["local_crops"], masks)
        total = out.dino_logits.sum() + out.ibot_logits.sum() + out.global_cls.sum()
        total = total + sum(v.sum() for v in out.distill_cls.values()) + sum(v.sum() for v in out.distill_patch.values())
        total.backward()
        meta.student.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return sum(times[warmup:]) / len(times[warmup:])



def run_variant(name: str, steps: int, warmup: int, extra: list[str]) -> dict:
    """Train ``steps`` iterations of one variant in-process and summarise its metrics."""
    import torch

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
        floor = compute_floor(cfg, steps, warmup)
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
        "compute_floor_seconds": round(floor, 3),
        "step_over_floor": round(step / floor, 3),
        "data_wait_fraction": round(sum(r["data_wait_fraction"] for r in records) / n, 3),
        "num_workers": cfg.data.num_workers,
        "compute_threads": torch.get_num_threads(),
        "peak_rss_mb": round(max(r["peak_mem_mb"] for r in records), 1),
    }


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number of threads")
    return int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--override", action="append", default=[], help="extra key=value config overrides")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compute-threads", type=_positive_int, default=None,
                    help="torch threads of the training process (default: torch's, all cores); with "
                         "--override data.num_workers=N, cores − N leaves the workers cores of their own")
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.single:
        print(json.dumps(run_variant(args.single, args.steps, args.warmup, args.override)))
        return
    from gpfm.runtime import machine_info

    if not LC.is_dir():
        sys.exit(f"{LC} not found: the benchmark uses the real LC25000 tiles from ../shared/data")
    if args.out is not None and args.out.is_dir():
        sys.exit(f"{args.out}: --out is a folder; give a file name for the JSON, e.g. {args.out / 'bench.json'}")
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    results = []
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if args.compute_threads:
        env["OMP_NUM_THREADS"] = str(args.compute_threads)  # read by torch at start-up; loader workers use 1
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
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:  # the child's own last line says why (bad override, missing data, ...)
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            sys.exit(f"variant {name} failed (exit {out.returncode}): {last}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    report = {"benchmark": "pretrain_throughput", "machine": machine_info(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from gpfm.atomic import write_text_atomic

        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
