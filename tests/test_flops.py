"""FLOP counting and device peaks behind the benchmarks' compute limits."""

import torch
from torch import nn

from gpfm.flops import compute_limit, count_flops, device_peak_flops, forward_flops_per_item


def test_a_linear_layer_costs_two_flops_per_multiply_add():
    layer = nn.Linear(64, 32, bias=False)
    assert forward_flops_per_item(layer, torch.zeros(5, 64)) == 2 * 64 * 32


def test_forward_plus_backward_is_about_three_forwards():
    layer = nn.Linear(64, 32, bias=False)
    x = torch.zeros(4, 64, requires_grad=True)
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 4 * 64 * 32


def test_vit_l14_is_about_155_gflops_per_tile_and_cpu_has_no_peak():
    from gpfm.models import create_encoder

    enc = create_encoder("gpfm", weights="random", device="cpu", precision="fp32", verbose=False)
    gflops = forward_flops_per_item(enc.model, torch.zeros(1, 3, 224, 224)) / 1e9
    assert 150 < gflops < 160  # 257 tokens × 24 blocks × (12·1024² + 2·257·1024) × 2
    assert device_peak_flops("cpu", "bf16") is None
    assert compute_limit(gflops * 1e9, "cpu", "fp32")["compute_limit_per_s"] is None
