"""The small-scale recipe (``tiny_cpu``) keeps the DINO teacher informative on real tiles; the previous recipe,
run on the same tiles and seed, goes uniform (so the check can fail).

A collapsed teacher gives every image the same target: entropy ln K (uniform over the K prototypes) and
student CLS tokens that all point the same way. Measured on the real LC25000 tiles with the ``tiny_cpu`` student
(6-block ViT-tiny/16, 96/48 px crops, no expert), ~60 steps.
"""

from __future__ import annotations

import math

import pytest

from gpfm.pretrain.config import load_config
from gpfm.pretrain.metrics_log import read_metrics
from gpfm.pretrain.train import train

STEPS = 60
PREVIOUS_RECIPE = ["student.layerscale=1e-5", "ssl.centering=softmax_center", "ssl.teacher_temp=0.07",
                   "ssl.warmup_teacher_temp=0.04", "ssl.warmup_teacher_temp_iters=20"]


def _late_entropy(run_dir, lc25000_dir, *extra: str) -> tuple[float, float]:
    cfg = load_config(None, [f"data.root={lc25000_dir}", f"train.output_dir={run_dir}", "distill.experts=[]",
                             f"train.stop_at_iteration={STEPS}", "train.log_every=1",
                             f"train.checkpoint_every={10**6}", *extra], preset="tiny_cpu")
    train(cfg)
    recs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["iteration"] > STEPS - 10]
    entropy = sum(r["diag/dino_teacher_entropy"] for r in recs) / len(recs)
    return entropy, math.log(cfg.heads.dino_out_dim)


@pytest.mark.realdata
@pytest.mark.slow
def test_tiny_cpu_teacher_stays_below_uniform_and_the_previous_recipe_does_not(tmp_path, lc25000_dir):
    entropy, ln_k = _late_entropy(tmp_path / "now", lc25000_dir)
    previous, _ = _late_entropy(tmp_path / "previous", lc25000_dir, *PREVIOUS_RECIPE)
    print(f"late teacher entropy / ln K: tiny_cpu {entropy / ln_k:.3f}, previous recipe {previous / ln_k:.3f}")
    assert entropy < 0.95 * ln_k
    assert previous > 0.99 * ln_k  # uniform: the failure this recipe fixes
