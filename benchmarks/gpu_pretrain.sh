#!/usr/bin/env bash
# UNKD throughput on one GPU: ViT-L/14 student (+ EMA teacher, 65,536-prototype DINO head) with three ViT
# experts of the UNI (ViT-L/16), Phikon (ViT-B/16) and CONCH (ViT-B/16 CoCa tower) architectures, RANDOM
# weights, at the release per-GPU batch (96 images = 192 global 224 px + 768 local 98 px crops), bf16 autocast.
# Batches are fixed synthetic tensors so the number measures the model step, not JPEG decoding.
# Prints images/s/GPU (after warm-up) against the compute limit (step FLOPs ÷ the GPU's dense bf16 peak), seconds
# per phase and peak memory as JSON; finishes within ~5 minutes.
#   bash benchmarks/gpu_pretrain.sh [STEPS=40] [BATCH=96]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-40}"
BATCH="${2:-96}"
PY="${PYTHON:-python}"
PYTHONPATH=src timeout 300 "$PY" - "$STEPS" "$BATCH" <<'PYEOF'
import itertools, json, sys, tempfile
import torch
from gpfm.pretrain.config import load_config
from gpfm.pretrain.metrics_log import read_metrics
from gpfm.pretrain.train import train
from gpfm.runtime import machine_info

steps, batch = int(sys.argv[1]), int(sys.argv[2])
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this benchmark needs a GPU (use benchmarks/pretrain_throughput.py on CPU)")
out = tempfile.mkdtemp(prefix="gpfm_gpu_pretrain_")
experts = "[{name: uni, weights: random, cls_weight: 1.0, patch_weight: 0.25}, " \
          "{name: phikon, weights: random, cls_weight: 0.5, patch_weight: 0.125}, " \
          "{name: conch, weights: random, cls_weight: 1.0, patch_weight: 0.0}]"
cfg = load_config(None, [f"distill.experts={experts}", f"data.batch_size_per_gpu={batch}", "data.root=synthetic",
                         f"train.output_dir={out}", f"train.stop_at_iteration={steps}", "train.log_every=5",
                         f"train.checkpoint_every={10**9}", "train.teacher_checkpoint_every=0",
                         "train.device=cuda", "train.precision=bf16"])
g = torch.randn(2 * batch, 3, 224, 224, pin_memory=True)
l = torch.randn(8 * batch, 3, 98, 98, pin_memory=True)
batches = itertools.repeat({"global_crops": g, "local_crops": l})
train(cfg, batches=batches)
recs = [r for r in read_metrics(f"{out}/metrics.jsonl") if r["iteration"] > 10]
n = len(recs)
phases = sorted({k for r in recs for k in r if k.startswith("time/")})
# compute limit: FLOPs of one whole step (teacher + experts forward, student forward + backward) counted on a
# one-iteration run of the same config, divided into the GPU's dense bf16 peak
from gpfm.flops import count_flops, device_peak_flops
from gpfm.pretrain.config import _apply_override
cfg1 = cfg
for o in (f"train.output_dir={out}/flops", "train.stop_at_iteration=1"):
    cfg1 = _apply_override(cfg1, o)
step_flops = count_flops(lambda: train(cfg1, batches=itertools.repeat({"global_crops": g, "local_crops": l})))
peak = device_peak_flops("cuda", "bf16")
images_per_s = sum(r["images_per_s"] for r in recs) / max(n, 1)
limit = None if peak is None else peak / (step_flops / batch)
print(json.dumps({
    "benchmark": "gpu_pretrain", "machine": machine_info(), "gpu": torch.cuda.get_device_name(0),
    "student": "ViT-L/14 (drop path 0.4 uniform)", "experts": ["uni", "phikon", "conch"], "batch_per_gpu": batch,
    "steps": steps, "measured_windows": n,
    "images_per_s_per_gpu": round(images_per_s, 2),
    "tflops_per_image": round(step_flops / batch / 1e12, 4),
    "achieved_tflops": round(images_per_s * step_flops / batch / 1e12, 1),
    "compute_limit_images_per_s": None if limit is None else round(limit, 1),
    "fraction_of_compute_limit": None if limit is None else round(images_per_s / limit, 3),
    "phase_seconds_per_step": {k[5:]: round(sum(r[k] for r in recs) / max(n, 1), 4) for k in phases},
    "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
}, indent=2))
PYEOF
