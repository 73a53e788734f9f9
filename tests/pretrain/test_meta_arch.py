"""Meta-architecture wiring.

The objective is the configured weighted sum, zero-weight experts are never built, the EMA covers backbone +
DINO head only, and the §8 switches run a finite step.
"""

from __future__ import annotations

import pytest
import torch

from gpfm.pretrain.config import load_config
from gpfm.pretrain.meta_arch import MetaArch, build_experts
from gpfm.pretrain.train import iteration_masks

EXPERT = "efficientnet-lite0-imagenet"
TINY = [
    "student.embed_dim=32",
    "student.depth=1",
    "student.num_heads=2",
    "heads.dino_out_dim=64",
    "heads.dino_hidden_dim=32",
    "heads.dino_bottleneck_dim=16",
    "heads.ibot_out_dim=48",
    "heads.ibot_hidden_dim=32",
    "heads.ibot_bottleneck_dim=16",
    "heads.distill_bottleneck_dim=16",
    "data.global_crops_size=64",
    "data.local_crops_size=32",
    "data.batch_size_per_gpu=4",
]


@pytest.fixture(scope="module")
def experts():
    return build_experts(load_config(None, TINY, preset="tiny_cpu"), torch.device("cpu"))


def _batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, n_local = cfg.data.batch_size_per_gpu, cfg.data.local_crops_number
    return {
        "global_crops": torch.randn(2 * b, 3, 64, 64, generator=g),
        "local_crops": torch.randn(n_local * b, 3, 32, 32, generator=g),
        "masks": iteration_masks(cfg, 0, 0, 2 * b),
    }


def test_objective_is_the_weighted_sum(experts):
    cfg = load_config(
        None,
        [
            *TINY,
            "ssl.koleo_weight=0.3",
            "distill.experts.0.cls_weight=0.7",
            "distill.experts.0.patch_weight=0.2",
        ],
        preset="tiny_cpu",
    )
    meta = MetaArch(cfg, torch.device("cpu"), experts=experts)
    total, t = meta.compute(_batch(cfg), teacher_temp=0.05)
    by_hand = (
        t["dino_global"]
        + t["dino_local"]
        + t["ibot"]
        + 0.3 * t["koleo"]
        + 0.7 * t[f"distill_{EXPERT}_cls"]
        + 0.2 * t[f"distill_{EXPERT}_patch"]
    )
    assert torch.allclose(total, by_hand)
    up = meta.upstream_losses(t)
    assert up["koleo_loss"] == pytest.approx(0.3 * float(t["koleo"].detach()) / 2)
    assert up["total_loss"] == pytest.approx(sum(v for k, v in up.items() if k != "total_loss"))
    # DINO: 2 global crops + 2 local crops → 2·2 + 2 = 6 (student, teacher) pairs share one normaliser
    out, teacher, *_ = meta._last
    views = list(out.dino_logits.split(4))
    pairs = meta.dino_loss.pair_losses(views, teacher.dino_probs)
    assert torch.allclose(t["dino_global"] + t["dino_local"], meta.dino_loss(views, teacher.dino_probs))
    assert torch.allclose(t["dino_local"], pairs[2:].sum() / 6)


def test_zero_weight_expert_is_never_built():
    cfg = load_config(
        None,
        [*TINY, "distill.experts=[{name: not-a-registered-encoder, cls_weight: 0, patch_weight: 0}]"],
        preset="tiny_cpu",
    )
    assert build_experts(cfg, torch.device("cpu")) == {}
    meta = MetaArch(cfg, torch.device("cpu"))
    assert len(meta.student.distill_heads) == 0 and set(meta.weights()) == {
        "dino_global",
        "dino_local",
        "ibot",
        "koleo",
    }


def test_ema_covers_backbone_and_dino_head_only(experts):
    cfg = load_config(None, TINY, preset="tiny_cpu")
    meta = MetaArch(cfg, torch.device("cpu"), experts=experts)
    with torch.no_grad():
        for p in meta.student.parameters():
            p.add_(torch.randn_like(p))
    t_before = {k: v.clone() for k, v in meta.teacher.state_dict().items()}
    s = meta.student.state_dict()
    meta.update_teacher(0.9)
    for key, after in meta.teacher.state_dict().items():
        assert torch.allclose(after, 0.9 * t_before[key] + 0.1 * s[key], atol=1e-6), key
    assert not any(k.startswith("distill_heads") for k in meta.teacher.state_dict())


SWITCH_SETS = {
    "a": [
        "ssl.centering=sinkhorn_knopp",
        "heads.ibot_separate_head=true",
        "heads.distill_head=separate_mlp",
        "distill.expert_patch_tokens=unmasked_only",
        "optim.clip_scope=all_trainable",
    ],
    "b": [
        "distill.expert_patch_tokens=extra_unmasked_pass",
        "distill.align=student_down",
        "distill.expert_norm=per_expert",
        "distill.align_dtype=fp32",
    ],
}


@pytest.mark.parametrize("name", sorted(SWITCH_SETS))
def test_switches_give_a_finite_step(experts, name):
    switches = SWITCH_SETS[name]
    cfg = load_config(None, [*TINY, *switches, "data.mask_probability=1.0"], preset="tiny_cpu")
    if "distill.expert_norm=per_expert" in switches:
        from gpfm.pretrain.experts import build_expert

        experts = {EXPERT: build_expert(EXPERT, device="cpu", input_norm="per_expert")}
    meta = MetaArch(cfg, torch.device("cpu"), experts=experts)
    total, terms = meta.compute(_batch(cfg), teacher_temp=0.04)
    assert torch.isfinite(total) and float(terms["ibot"].detach()) > 0
    total.backward()
    assert all(p.grad is not None for p in meta.student.distill_heads.parameters())
    if "heads.ibot_separate_head=true" in switches:
        assert meta.teacher.ibot_head is not None and meta.ibot_loss.center.shape[-1] == 48
        assert "distill_" + EXPERT in meta.clip_modules()


def test_expert_view_clean_feeds_the_clean_crops(experts):
    cfg = load_config(None, [*TINY, "distill.expert_view=clean"], preset="tiny_cpu")
    meta = MetaArch(cfg, torch.device("cpu"), experts=experts)
    batch = _batch(cfg)
    batch["global_crops_clean"] = torch.randn_like(batch["global_crops"])
    got = meta.expert_targets(batch)[EXPERT]
    assert torch.allclose(got.cls, experts[EXPERT](batch["global_crops_clean"]).cls)
    assert not torch.allclose(got.cls, experts[EXPERT](batch["global_crops"]).cls)
    del batch["global_crops_clean"]
    with pytest.raises(ValueError, match="global_crops_clean"):
        meta.expert_targets(batch)
