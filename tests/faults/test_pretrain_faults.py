"""``gpfm pretrain`` resume safety: changed config, other architecture, damaged checkpoints, NaN guard, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gpfm.errors import EXIT_DIVERGED, EXIT_INPUT
from gpfm.pretrain.checkpoint import ResumeError, is_healthy, list_checkpoints
from gpfm.pretrain.config import load_config
from gpfm.pretrain.metrics_log import read_metrics
from gpfm.pretrain.resume import SPIKE_FACTOR, SPIKE_WARMUP, LossSpikeGuard, config_changes
from gpfm.pretrain.train import train
from tests.faults._helpers import assert_one_line_error

pytestmark = pytest.mark.realdata

TINY = [  # SSL only, a 2-block ViT on 64 px crops: about a second per iteration on 2 cores
    "student.embed_dim=32", "student.depth=2", "student.num_heads=2", "heads.dino_out_dim=64",
    "heads.dino_hidden_dim=32", "heads.dino_bottleneck_dim=16", "heads.distill_bottleneck_dim=16",
    "heads.ibot_out_dim=64", "heads.ibot_hidden_dim=32", "heads.ibot_bottleneck_dim=16",
    "data.global_crops_size=64", "data.local_crops_size=32", "data.batch_size_per_gpu=4", "data.num_workers=0",
    "optim.warmup_epochs=0", "optim.epochs=100", "train.checkpoint_every=2", "train.log_every=1",
    "train.keep_last=5", "train.teacher_checkpoint_every=0", "distill.experts=[]",
]


def cfg(run: Path, root: Path, *extra: str):
    return load_config(None, [*TINY, f"data.root={root}", f"train.output_dir={run}", *extra], preset="tiny_cpu")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, lc25000_dir):
    run = tmp_path_factory.mktemp("pretrain")
    train(cfg(run, lc25000_dir, "train.stop_at_iteration=4"))
    return run


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_with_a_changed_config_is_refused_and_the_record_kept(base_run, tmp_path, lc25000_dir):
    run = _copy_run(base_run, tmp_path / "run")
    recorded = (run / "config.yaml").read_text()
    with pytest.raises(ResumeError, match=r"optim.base_lr: .* → 0.01.*--allow-config-change"):
        train(cfg(run, lc25000_dir, "train.stop_at_iteration=6", "optim.base_lr=0.01"))
    assert (run / "config.yaml").read_text() == recorded  # the record still describes the weights
    # allowed explicitly: continues, and the change is recorded with its iteration
    train(cfg(run, lc25000_dir, "train.stop_at_iteration=6", "optim.base_lr=0.01"), allow_config_change=True)
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert history[0]["iteration"] == 4 and "optim.base_lr" in history[0]["changes"][0]
    assert "base_lr: 0.01" in (run / "config.yaml").read_text()


def test_operational_keys_may_change_on_resume(base_run, tmp_path, lc25000_dir):
    run = _copy_run(base_run, tmp_path / "run")
    result = train(cfg(run, lc25000_dir, "train.stop_at_iteration=5", "train.log_every=5", "train.keep_last=2"))
    assert result.iterations == 5


def test_resume_with_another_architecture_is_one_clear_error(base_run, tmp_path, lc25000_dir, gpfm_cli):
    run = _copy_run(base_run, tmp_path / "run")
    result = gpfm_cli("pretrain", "--preset", "tiny_cpu", *TINY, f"data.root={lc25000_dir}",
                      f"train.output_dir={run}", "train.stop_at_iteration=6", "student.depth=3")
    assert result.code == EXIT_INPUT
    assert_one_line_error(result, "student.depth: 2 → 3", "config.yaml")


def test_state_dict_mismatch_is_a_resume_error_not_a_traceback(base_run):
    from gpfm.pretrain.checkpoint import load_checkpoint, restore_state
    from gpfm.pretrain.meta_arch import MetaArch

    state = load_checkpoint(list_checkpoints(base_run)[-1])
    other = MetaArch(cfg(base_run, Path("."), "student.depth=3"), torch.device("cpu"), experts={})
    with pytest.raises(ResumeError, match="does not fit this model"):
        restore_state(state, other, None)


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(base_run, tmp_path, lc25000_dir, caplog):
    run = _copy_run(base_run, tmp_path / "run")
    latest = list_checkpoints(run)[-1]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])  # a torn copy
    with caplog.at_level("WARNING"):
        result = train(cfg(run, lc25000_dir, "train.stop_at_iteration=6"))
    assert result.iterations == 6
    assert (latest.parent / (latest.name + ".damaged")).is_file() and "damaged" in caplog.text
    iterations = [r["iteration"] for r in read_metrics(run / "metrics.jsonl")]
    assert iterations == sorted(set(iterations)) == list(range(1, 7))  # iterations 3-4 redone, logged once


def test_no_readable_checkpoint_is_one_clear_error(base_run, tmp_path, lc25000_dir):
    run = _copy_run(base_run, tmp_path / "run")
    for ckpt in list_checkpoints(run):
        ckpt.write_bytes(b"garbage")
    with pytest.raises(ResumeError, match="none of the 2 checkpoints could be read"):
        train(cfg(run, lc25000_dir, "train.stop_at_iteration=6"))


def test_checkpoints_carry_a_health_record(base_run):
    for ckpt in list_checkpoints(base_run):
        record = json.loads(ckpt.with_suffix(".json").read_text())
        assert record["healthy"] and record["weights_finite"] and is_healthy(ckpt)


def test_loss_spike_marks_the_next_checkpoint_unhealthy():
    guard = LossSpikeGuard()
    model = torch.nn.Linear(2, 2)
    for it in range(SPIKE_WARMUP + 5):
        guard.observe(it, 1.0 + 0.01 * (it % 3))
    assert guard.verdict(model)["healthy"]
    guard.observe(99, SPIKE_FACTOR * 1.2)
    verdict = guard.verdict(model)
    assert not verdict["healthy"] and "iteration 99" in verdict["reason"]
    guard.reset()
    assert guard.verdict(model)["healthy"]
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    bad = guard.verdict(model)
    assert not bad["healthy"] and not bad["weights_finite"]


def test_nan_names_the_last_healthy_checkpoint_and_exits_5(base_run, tmp_path, lc25000_dir, gpfm_cli, monkeypatch):
    run = _copy_run(base_run, tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    record = json.loads(newest.with_suffix(".json").read_text())
    newest.with_suffix(".json").write_text(json.dumps({**record, "healthy": False, "reason": "loss spike"}))
    from gpfm.pretrain import meta_arch

    original = meta_arch.MetaArch.compute

    def nan_compute(self, *args, **kwargs):
        total, terms = original(self, *args, **kwargs)
        return total * float("nan"), terms

    monkeypatch.setattr(meta_arch.MetaArch, "compute", nan_compute)
    result = gpfm_cli("pretrain", "--preset", "tiny_cpu", *TINY, f"data.root={lc25000_dir}",
                      f"train.output_dir={run}", "train.stop_at_iteration=6")
    assert result.code == EXIT_DIVERGED
    line = assert_one_line_error(result, "non-finite loss", "checkpoint_00000002.pt")
    assert "checkpoint_00000004.pt" not in line  # the unhealthy newest one is not called good


def test_config_changes_ignore_operational_keys():
    a = {"train": {"output_dir": "a", "log_every": 1}, "optim": {"base_lr": 1.0}}
    b = {"train": {"output_dir": "b", "log_every": 9}, "optim": {"base_lr": 2.0}}
    assert config_changes(a, b) == ["optim.base_lr: 1.0 → 2.0"]
