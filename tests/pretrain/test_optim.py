"""AdamW parameter groups: no-decay exclusions, layer-wise LR decay, last-layer freeze, per-module clip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gpfm.models.vit import ViTConfig, build_vit
from gpfm.pretrain.config import OptimConfig
from gpfm.pretrain.heads import DINOHead
from gpfm.pretrain.optim import apply_hyperparameters, build_optimizer, build_param_groups, clip_gradients


@pytest.fixture(scope="module")
def student() -> nn.Module:
    m = nn.Module()
    m.backbone = build_vit(
        ViTConfig(embed_dim=32, depth=3, num_heads=2, patch_size=16, img_size=32), mask_token=True
    )
    m.dino_head = DINOHead(32, 64, hidden_dim=32, bottleneck_dim=16)
    return m


def _rule(groups, name):
    return next(g for g in groups if name in g["names"])


def test_groups_follow_the_rules(student):
    cfg = OptimConfig()  # layer decay 0.9, patch-embed ×0.2
    groups = build_param_groups(student.named_parameters(), num_layers=3, cfg=cfg)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in student.named_parameters())
    d = 0.9
    expect = {  # name: (lr_mult, wd_mult, last_layer), written out by hand from spec §5
        "backbone.cls_token": (d**4, 1.0, False),
        "backbone.pos_embed": (d**4, 1.0, False),
        "backbone.mask_token": (d**4, 1.0, False),
        "backbone.patch_embed.proj.weight": (d**4 * 0.2, 1.0, False),
        "backbone.patch_embed.proj.bias": (d**4 * 0.2, 0.0, False),
        "backbone.blocks.0.attn.qkv.weight": (d**3, 1.0, False),
        "backbone.blocks.0.norm1.weight": (d**3, 0.0, False),
        "backbone.blocks.1.ls1.gamma": (d**2, 0.0, False),
        "backbone.blocks.2.mlp.fc1.bias": (d**1, 0.0, False),
        "backbone.blocks.2.mlp.fc2.weight": (d**1, 1.0, False),
        "backbone.norm.weight": (1.0, 0.0, False),
        "dino_head.mlp.0.weight": (1.0, 1.0, False),
        "dino_head.last_layer.parametrizations.weight.original0": (1.0, 1.0, True),
        "dino_head.last_layer.parametrizations.weight.original1": (1.0, 1.0, True),
    }
    for name, (lr_mult, wd_mult, last) in expect.items():
        g = _rule(groups, name)
        assert (g["lr_mult"], g["wd_mult"], g["is_last_layer"]) == (pytest.approx(lr_mult), wd_mult, last), (
            name
        )


def test_hyperparameters_and_frozen_last_layer(student):
    groups = build_param_groups(student.named_parameters(), 3, OptimConfig())
    opt = build_optimizer(groups, OptimConfig())
    apply_hyperparameters(opt, lr=1e-3, last_layer_lr=0.0, wd=0.04)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.0 if g["is_last_layer"] else 1e-3 * g["lr_mult"])
        assert g["weight_decay"] == pytest.approx(0.04 * g["wd_mult"])
    before = student.dino_head.last_layer.parametrizations.weight.original1.detach().clone()
    x = torch.randn(2, 3, 32, 32)
    student.dino_head(student.backbone.forward_tokens(x)[:, 0]).sum().backward()
    opt.step()
    opt.zero_grad()
    assert torch.equal(before, student.dino_head.last_layer.parametrizations.weight.original1)


def test_clip_gradients_per_module():
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    for p in a.parameters():
        p.grad = torch.full_like(p, 3.0)
    for p in b.parameters():
        p.grad = torch.full_like(p, 0.01)
    norm_a = torch.sqrt(torch.tensor(20 * 9.0)).item()
    norms = clip_gradients({"a": a, "b": b}, max_norm=1.0)
    assert norms["a"] == pytest.approx(norm_a) and norms["b"] == pytest.approx((20 * 1e-4) ** 0.5)
    total = torch.sqrt(sum((p.grad**2).sum() for p in a.parameters())).item()
    assert total == pytest.approx(1.0, rel=1e-4)  # a clipped to 1 on its own ...
    assert b.weight.grad[0, 0].item() == pytest.approx(0.01)  # ... b untouched
