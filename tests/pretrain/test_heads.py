"""Heads: structure, parameter names, gain initialisation, output bound |out_j| ≤ |g_j|, hand computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpfm.pretrain.heads import DINOHead, DistillHead, head_gains


def _randomise_gains(head: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    g = head.last_layer.parametrizations.weight.original0
    with torch.no_grad():
        g.copy_(torch.randn(g.shape, generator=torch.Generator().manual_seed(seed)) * 3.0)
    return g.detach().reshape(-1)


def test_dino_head_structure_names_and_gain_init() -> None:
    head = DINOHead(32, out_dim=50, hidden_dim=24, bottleneck_dim=8, nlayers=3)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 24), (24, 24), (24, 8)]
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    names = {n for n, _ in head.named_parameters() if "last_layer" in n}
    assert names == {
        "last_layer.parametrizations.weight.original0",
        "last_layer.parametrizations.weight.original1",
    }
    assert head.last_layer.bias is None
    assert torch.equal(head_gains(head), torch.ones(50))
    # with unit gains the effective weight rows have unit norm
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(50), atol=1e-5)
    assert head(torch.randn(2, 5, 32)).shape == (2, 5, 50)
    one = DINOHead(16, out_dim=10, bottleneck_dim=4, nlayers=1)
    assert len(one.mlp) == 1 and one.mlp[0].out_features == 4


def test_dino_head_matches_hand_computation_and_bound() -> None:
    torch.manual_seed(0)
    head = DINOHead(12, out_dim=30, hidden_dim=10, bottleneck_dim=6, nlayers=2)
    g = _randomise_gains(head)
    x = torch.randn(7, 12) * 50.0
    out = head(x)
    l1, l2 = head.mlp[0], head.mlp[2]
    z = l2(F.gelu(l1(x)))
    z = z / z.norm(dim=-1, keepdim=True)
    v = head.last_layer.parametrizations.weight.original1
    expected = torch.stack(
        [torch.stack([g[j] * (v[j] @ z[i]) / v[j].norm() for j in range(30)]) for i in range(7)]
    )
    assert torch.allclose(out, expected, atol=1e-5)
    assert (out.abs() <= g.abs() + 1e-5).all()


@pytest.mark.parametrize("shape", [(9, 20), (3, 16, 20)])
def test_distill_head_shared_bound_and_structure(shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    head = DistillHead(20, out_dim=40, bottleneck_dim=8)
    assert (head.proj.in_features, head.proj.out_features) == (20, 8) and head.proj.bias is not None
    assert torch.equal(head_gains(head), torch.ones(40))
    g = _randomise_gains(head, seed=3)
    x = torch.randn(*shape) * 10
    out = head(x)
    assert out.shape == (*shape[:-1], 40)
    assert (out.abs() <= g.abs() + 1e-5).all()
    # the same head maps CLS and patch tokens
    assert torch.equal(head(x, which="patch"), out)


def test_distill_head_separate_mlp() -> None:
    torch.manual_seed(2)
    head = DistillHead(20, out_dim=12, kind="separate_mlp", hidden_dim=16)
    x = torch.randn(4, 20)
    cls, patch = head(x, which="cls"), head(x, which="patch")
    assert cls.shape == patch.shape == (4, 12)
    assert not torch.allclose(cls, patch)
    expected = head.cls_head.last_layer(F.gelu(head.cls_head.fc1(x)))
    assert torch.allclose(cls, expected)
    assert head_gains(head) is None
    assert any("cls_head.last_layer" in n for n, _ in head.named_parameters())
    with pytest.raises(ValueError, match="which"):
        head(x, which="token")


def test_distill_head_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="separate_mlp"):
        DistillHead(8, 4, kind="mlp")  # type: ignore[arg-type]


def test_head_gradients_reach_every_parameter() -> None:
    head = DINOHead(8, out_dim=16, hidden_dim=8, bottleneck_dim=4)
    head(torch.randn(5, 8)).pow(2).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
