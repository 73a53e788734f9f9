"""Config switches that must change behaviour: ``ssl.koleo_fp32`` and Sinkhorn centring without masked tokens."""

from __future__ import annotations

import math

import pytest
import torch

from gpfm.pretrain.losses import KoLeoLoss
from gpfm.pretrain.losses._centering import sinkhorn_knopp


def _duplicates(dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(4, 1024, generator=torch.Generator().manual_seed(0))
    x[1] = x[0]  # an exact duplicate pair
    return x.to(dtype)


def test_koleo_fp32_switch_changes_the_value_of_a_duplicate_pair():
    upcast = KoLeoLoss(upcast_fp32=True)(_duplicates(torch.float16))
    native = KoLeoLoss(upcast_fp32=False)(_duplicates(torch.float16))
    assert math.isfinite(float(upcast))  # the 1e-8 epsilons exist in fp32
    assert not math.isfinite(float(native))  # and round to zero in fp16, as upstream's fp16 CLS tokens do


def test_meta_arch_builds_koleo_from_the_config(lc25000_dir):
    from gpfm.pretrain.config import load_config
    from gpfm.pretrain.meta_arch import MetaArch

    overrides = ["student.embed_dim=32", "student.depth=1", "student.num_heads=2", "distill.experts=[]",
                 "heads.dino_out_dim=64", "heads.ibot_out_dim=64", f"data.root={lc25000_dir}"]
    for flag in (True, False):
        cfg = load_config(None, [*overrides, f"ssl.koleo_fp32={str(flag).lower()}"], preset="tiny_cpu")
        assert MetaArch(cfg, torch.device("cpu"), experts={}).koleo_loss.upcast_fp32 is flag


def test_sinkhorn_with_no_rows_returns_an_empty_target():
    empty = torch.zeros(0, 16)
    out = sinkhorn_knopp(empty, teacher_temp=0.07)
    assert out.shape == (0, 16)
    full = sinkhorn_knopp(torch.randn(6, 16), teacher_temp=0.07)
    assert torch.allclose(full.sum(dim=1), torch.ones(6), atol=1e-5)


@pytest.mark.realdata
def test_a_step_with_sinkhorn_and_no_masked_tokens_is_finite(tmp_path, lc25000_dir):
    from gpfm.pretrain.config import load_config
    from gpfm.pretrain.train import train

    cfg = load_config(None, [
        "student.embed_dim=32", "student.depth=2", "student.num_heads=2", "heads.dino_out_dim=64",
        "heads.dino_hidden_dim=32", "heads.dino_bottleneck_dim=16", "heads.ibot_out_dim=64",
        "heads.ibot_hidden_dim=32", "heads.ibot_bottleneck_dim=16", "data.global_crops_size=64",
        "data.local_crops_size=32", "data.batch_size_per_gpu=4", "data.num_workers=0", "distill.experts=[]",
        "ssl.centering=sinkhorn_knopp", "data.mask_probability=0", "optim.warmup_epochs=0", "optim.epochs=100",
        "train.stop_at_iteration=2", "train.log_every=1", "train.checkpoint_every=2",
        "train.teacher_checkpoint_every=0", f"data.root={lc25000_dir}", f"train.output_dir={tmp_path}",
    ], preset="tiny_cpu")
    result = train(cfg)
    assert result.iterations == 2 and math.isfinite(result.last_record["objective"])
    assert result.last_record["term/ibot"] == 0.0  # no masked token: no iBOT signal, and no crash


def test_kl_expert_cls_loss_equals_its_formula():
    from gpfm.pretrain.losses import ExpertClsKLLoss

    gen = torch.Generator().manual_seed(1)
    h, t = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen) * 3
    p, q = torch.softmax(t, -1), torch.softmax(h, -1)
    by_hand = (p * (p.log() - q.log())).sum(-1).mean()  # Σ_d p_t (log p_t − log p_h), mean over the batch
    assert torch.allclose(ExpertClsKLLoss()(h, t), by_hand, atol=1e-6)
    assert float(ExpertClsKLLoss()(t, t)) == pytest.approx(0.0, abs=1e-6)
    h.requires_grad_(True)
    ExpertClsKLLoss()(h, t.requires_grad_(True)).backward()
    assert h.grad is not None and t.grad is None  # the target carries no gradient


def test_ema_zscore_sets_then_averages_then_follows_an_ema():
    from gpfm.pretrain.target_norm import EMAZScore

    norm = EMAZScore(3, min_momentum=0.25)
    first = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]])
    out = norm(first)
    assert torch.allclose(norm.mean, torch.tensor([2.0, 4.0, 6.0])) and torch.allclose(norm.var, torch.tensor(
        [1.0, 4.0, 9.0]))
    assert torch.allclose(out, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), atol=1e-5)
    second = torch.full((2, 3), 10.0)
    norm(second)  # k = 2: the exact average of the two batches
    assert torch.allclose(norm.mean, torch.tensor([6.0, 7.0, 8.0]))
    for _ in range(3):
        norm(second)  # k = 3, 4 use 1/k, then k = 5 uses the floor 0.25
    assert int(norm.count) == 5
    norm.eval()
    before = norm.mean.clone()
    norm(torch.zeros(4, 3))
    assert torch.equal(norm.mean, before)  # no update outside training


@pytest.mark.realdata
def test_ema_zscore_and_kl_train_and_resume_bit_exactly(tmp_path, lc25000_dir):
    from gpfm.pretrain.checkpoint import list_checkpoints, load_checkpoint
    from gpfm.pretrain.config import load_config
    from gpfm.pretrain.experts import build_expert
    from gpfm.pretrain.train import train

    experts = {"efficientnet-lite0-imagenet": build_expert("efficientnet-lite0-imagenet", weights="random",
                                                           device="cpu")}
    base = ["student.embed_dim=32", "student.depth=2", "student.num_heads=2", "heads.dino_out_dim=64",
            "heads.dino_hidden_dim=32", "heads.dino_bottleneck_dim=16", "heads.distill_bottleneck_dim=16",
            "data.global_crops_size=64", "data.local_crops_size=32", "data.batch_size_per_gpu=4",
            "data.num_workers=0", "optim.warmup_epochs=0", "optim.epochs=100", "train.log_every=1",
            "train.checkpoint_every=2", "train.teacher_checkpoint_every=0", "train.keep_last=5",
            "distill.teacher_feature_norm=ema_zscore", "distill.cls_loss=kl", f"data.root={lc25000_dir}"]

    def run(folder, stop):
        return train(load_config(None, [*base, f"train.output_dir={folder}", f"train.stop_at_iteration={stop}"],
                                 preset="tiny_cpu"), experts=experts)

    straight = run(tmp_path / "a", 4)
    assert math.isfinite(straight.last_record["objective"])
    run(tmp_path / "b", 2)
    run(tmp_path / "b", 4)
    a, b = (load_checkpoint(list_checkpoints(tmp_path / d)[-1])["model"] for d in ("a", "b"))
    stats = [k for k in a if k.startswith("target_norms.")]
    assert stats and all(torch.equal(a[k], b[k]) for k in a)  # statistics are checkpointed: exact resume
    assert int(a["target_norms.efficientnet-lite0-imagenet_cls.count"]) == 4
