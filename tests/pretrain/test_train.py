"""The training loop on real LC25000 tiles with the real EfficientNet-Lite0 expert.

Losses fall, gradients reach only the student side, resume is bit-exact, a NaN stops the run with the last
checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpfm.pretrain.checkpoint import list_checkpoints, load_checkpoint
from gpfm.pretrain.config import load_config
from gpfm.pretrain.meta_arch import MetaArch
from gpfm.pretrain.metrics_log import read_metrics
from gpfm.pretrain.train import NonFiniteLossError, train

EXPERT = "efficientnet-lite0-imagenet"
TINY = [
    "student.embed_dim=64",
    "student.depth=2",
    "student.num_heads=2",
    "student.drop_path_rate=0.1",
    "heads.dino_out_dim=256",
    "heads.dino_hidden_dim=64",
    "heads.dino_bottleneck_dim=32",
    "heads.distill_bottleneck_dim=32",
    "data.global_crops_size=64",
    "data.local_crops_size=32",
    "data.batch_size_per_gpu=8",
    "optim.base_lr=2e-3",
    "optim.warmup_epochs=0",
    "optim.epochs=100",
    "train.checkpoint_every=3",
    "train.log_every=1",
    "train.keep_last=5",
]


def tiny_cfg(run_dir: Path, root: Path, *extra: str):
    return load_config(
        None, [*TINY, f"data.root={root}", f"train.output_dir={run_dir}", *extra], preset="tiny_cpu"
    )


@pytest.fixture(scope="module")
def expert():
    from gpfm.pretrain.experts import build_expert

    return {EXPERT: build_expert(EXPERT, device="cpu")}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, lc25000_dir, expert):
    run = tmp_path_factory.mktemp("straight")
    result = train(
        tiny_cfg(
            run,
            lc25000_dir,
            "train.stop_at_iteration=6",
            "train.teacher_checkpoint_every=6",
            f"train.probe_root={lc25000_dir}",
            "train.probe_every=3",
            "train.probe_max_images=120",
        ),
        experts=expert,
    )
    return run, result


@pytest.mark.slow
@pytest.mark.realdata
def test_losses_decrease_on_real_tiles(straight_run):
    run, result = straight_run
    records = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in records] == list(range(1, 7)) and result.iterations == 6
    first, last = records[:3], records[-3:]

    def mean(rs, key):
        return sum(r[key] for r in rs) / len(rs)

    for key in ("objective", f"term/distill_{EXPERT}_cls", f"term/distill_{EXPERT}_patch", "term/koleo"):
        assert mean(last, key) < mean(first, key), key
    rec = records[-1]
    for key in (
        "loss/dino_local_crops_loss",
        "loss/dino_global_crops_loss",
        "loss/ibot_loss",
        "loss/koleo_loss",
        f"loss/distill_{EXPERT}_cls_loss",
        "loss/total_loss",
        "sched/lr",
        "sched/mom",
        "time/teacher",
        "time/experts",
        "time/backward",
        "time/ema",
        "images_per_s",
        "data_wait_fraction",
        "peak_mem_mb",
        "grad_norm/backbone",
        f"grad_norm/distill_{EXPERT}",
    ):
        assert key in rec, key
    # upstream logging convention (§10): iBOT and KoLeo at half their objective value
    assert rec["loss/ibot_loss"] == pytest.approx(rec["term/ibot"] / 2, rel=1e-5)
    assert rec["loss/koleo_loss"] == pytest.approx(0.1 * rec["term/koleo"] / 2, rel=1e-5)
    assert (run / "curves.png").stat().st_size > 10_000 and (run / "manifest.json").is_file()
    # the in-training kNN/linear probe of the EMA teacher (§10) is merged into the step records
    for r in (records[2], records[5]):
        assert 0.0 <= r["probe/knn_acc"] <= 1.0 and 0.0 <= r["probe/linear_acc"] <= 1.0
    assert "probe/knn_acc" not in records[0]
    # the periodic EMA-teacher export (spec §7) loads strictly as an encoder
    from gpfm.pretrain.export import load_exported_encoder

    enc = load_exported_encoder(run / "teacher" / "iter_00000006")
    assert enc.embed(torch.zeros(1, 3, 64, 64)).shape == (1, 64)


@pytest.mark.slow
@pytest.mark.realdata
def test_resume_is_bit_exact(straight_run, tmp_path, lc25000_dir, expert):
    run, _ = straight_run
    train(tiny_cfg(tmp_path, lc25000_dir, "train.stop_at_iteration=3"), experts=expert)
    train(tiny_cfg(tmp_path, lc25000_dir, "train.stop_at_iteration=6"), experts=expert)
    a = load_checkpoint(list_checkpoints(run)[-1])
    b = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert a["iteration"] == b["iteration"] == 6
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


@pytest.mark.slow
@pytest.mark.realdata
def test_worker_processes_give_the_same_run_and_resume_bit_exactly(straight_run, tmp_path, lc25000_dir, expert):
    """Augmentation in 2 worker processes (killed and restarted at the resume) = the in-process run, bit for bit."""
    run, _ = straight_run
    workers = ("data.num_workers=2",)
    train(tiny_cfg(tmp_path, lc25000_dir, "train.stop_at_iteration=3", *workers), experts=expert)
    train(tiny_cfg(tmp_path, lc25000_dir, "train.stop_at_iteration=6", *workers), experts=expert)
    a = load_checkpoint(list_checkpoints(run)[-1])
    b = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert a["iteration"] == b["iteration"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.slow
@pytest.mark.realdata
def test_nan_stops_with_last_checkpoint_intact(tmp_path, lc25000_dir, expert, monkeypatch):
    cfg = tiny_cfg(tmp_path, lc25000_dir, "train.stop_at_iteration=6")
    real = MetaArch.loss_terms

    def poisoned(self, out, teacher, experts, batch):
        terms = real(self, out, teacher, experts, batch)
        if poisoned.calls == 4:  # iteration 4, after the checkpoint at 3
            terms["ibot"] = terms["ibot"] * float("nan")
        poisoned.calls += 1
        return terms

    poisoned.calls = 0
    monkeypatch.setattr(MetaArch, "loss_terms", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 4 .*ibot=nan.*checkpoint_00000003.pt is intact"):
        train(cfg, experts=expert)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint_00000003.pt"]
    assert load_checkpoint(list_checkpoints(tmp_path)[0])["iteration"] == 3


@pytest.mark.realdata
def test_gradients_reach_only_student_and_heads(lc25000_dir, expert, tmp_path):
    from gpfm.pretrain.dist import DistInfo
    from gpfm.pretrain.train import batch_stream, iteration_masks

    cfg = tiny_cfg(tmp_path, lc25000_dir)
    meta = MetaArch(cfg, torch.device("cpu"), experts=expert)
    batch = next(batch_stream(cfg, DistInfo(), 0))
    batch["masks"] = iteration_masks(cfg, 0, 0, batch["global_crops"].shape[0])
    total, _ = meta.compute(batch, 0.04)
    total.backward()
    student = dict(meta.student.named_parameters())
    with_grad = {n for n, p in student.items() if p.grad is not None and p.grad.abs().sum() > 0}
    # every trainable group gets a gradient: backbone (incl. the mask token), DINO head, the distill head
    assert {
        "backbone.mask_token",
        "backbone.blocks.0.attn.qkv.weight",
        "dino_head.mlp.0.weight",
        f"distill_heads.{EXPERT}.proj.weight",
    } <= with_grad
    assert all(p.grad is None for p in meta.teacher.parameters())
    assert all(not p.requires_grad and p.grad is None for p in expert[EXPERT].encoder.model.parameters())
    assert not any(k.startswith(("_experts", "experts")) for k in meta.state_dict())
