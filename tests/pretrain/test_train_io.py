"""Checkpoint files (atomic, keep-last-K, RNG round trip) and metric records (JSONL merge on resume, plot)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from gpfm.pretrain.checkpoint import (
    capture_rng,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    restore_state,
    save_checkpoint,
)
from gpfm.pretrain.metrics_log import MetricsLogger, PhaseTimer, plot_metrics, read_metrics


class _Meta(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(3, 2)
        self.register_buffer("center", torch.zeros(1, 2))


def test_rng_capture_restore_round_trip():
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_checkpoints_keep_last_k_and_restore(tmp_path):
    meta = _Meta()
    opt = torch.optim.AdamW(meta.student.parameters(), lr=0.1)
    for it in (2, 4, 6, 8):
        meta.student(torch.randn(4, 3)).sum().backward()
        opt.step()
        meta.center.fill_(it)
        save_checkpoint(
            tmp_path,
            iteration=it,
            meta=meta,
            optimizer=opt,
            samples_per_rank=it * 4,
            config={"a": 1},
            keep_last=2,
        )
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint_00000006.pt",
        "checkpoint_00000008.pt",
    ]
    (tmp_path / "checkpoints" / "checkpoint_00000010.pt.tmp-host-1-ab").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "checkpoint_00000008.pt"  # temp files are never taken
    state = load_checkpoint(latest_checkpoint(tmp_path))
    fresh = _Meta()
    fresh_opt = torch.optim.AdamW(fresh.student.parameters(), lr=0.1)
    restore_state(state, fresh, fresh_opt)
    assert torch.equal(fresh.student.weight, meta.student.weight) and float(fresh.center[0, 0]) == 8
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    with pytest.raises(ValueError, match="written by 1 processes but this run has 2"):
        restore_state(state, fresh, fresh_opt, rank=0, world_size=2)
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="x.pt: cannot read"):
        load_checkpoint(tmp_path / "x.pt")


def test_metrics_jsonl_tensorboard_and_plot(tmp_path):
    log = MetricsLogger(tmp_path)
    for it, loss in ((1, 3.0), (2, 2.0), (3, float("nan"))):
        log.log(it, {"loss/total_loss": loss, "objective": loss, "sched/lr": 1e-3, "time/backward": 0.5})
    log.log(2, {"loss/total_loss": 1.5, "objective": 1.5})  # a resumed run re-logs iteration 2
    log.close()
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in recs] == [1, 2, 3] and recs[1]["objective"] == 1.5
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[2])["objective"] is None
    assert any((tmp_path / "tensorboard").iterdir())
    png = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    timer = PhaseTimer(torch.device("cpu"))
    with timer.phase("ema"):
        sum(range(1000))
    timer.add("data", 0.25)
    got = timer.collect()
    assert got["data"] == 0.25 and got["ema"] >= 0 and timer.collect() == {}


def test_probe_knn_matches_sklearn_and_linear_separates():
    from sklearn.neighbors import KNeighborsClassifier

    from gpfm.pretrain.probe import ProbeSet, probe_backbone

    class Flat(nn.Module):  # "CLS" = the flattened input
        def forward_tokens(self, x):
            return x.flatten(1)[:, None, :]

    g = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(3), 40)
    images = torch.randn(120, 1, 2, 4, generator=g) + 3.0 * torch.eye(8)[labels].reshape(120, 1, 2, 4)
    is_train = np.tile([True, False], 60)
    probe = ProbeSet(images, labels, is_train)
    got = probe_backbone(Flat(), probe, torch.device("cpu"), k=5)
    feats = images.flatten(1).numpy()
    ref = KNeighborsClassifier(5, metric="cosine").fit(feats[is_train], labels[is_train])
    assert got["probe/knn_acc"] == pytest.approx((ref.predict(feats[~is_train]) == labels[~is_train]).mean())
    assert got["probe/linear_acc"] > 0.9
