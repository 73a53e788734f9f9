"""Schedules at the iterations spec §5/§7 names, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from gpfm.pretrain.config import load_config
from gpfm.pretrain.schedules import CosineSchedule, build_schedules, peak_lr


@pytest.fixture(scope="module")
def release():
    cfg = load_config(None, preset="gpfm_vitl14")
    return cfg, build_schedules(cfg, world_size=16)


def test_peak_lr_is_sqrt_scaled(release):
    cfg, _ = release
    assert peak_lr(cfg, 16) == pytest.approx(4e-4 * math.sqrt(1.5))
    assert peak_lr(cfg, 16) == pytest.approx(4.899e-4, rel=1e-3)


def test_values_at_0_50k_87500_500k(release):
    _, s = release
    peak = 4e-4 * math.sqrt(1.5)
    v0, v50, v875, v500 = (s.values(t) for t in (0, 50_000, 87_500, 500_000))
    # iteration 0: LR warm-up starts at 0, WD 0.04, momentum 0.992, τ_T 0.04; last layer frozen
    assert v0 == pytest.approx(
        {"lr": 0.0, "last_layer_lr": 0.0, "wd": 0.04, "mom": 0.992, "teacher_temp": 0.04}
    )
    # 50k = end of the 40-epoch warm-up: peak LR; WD/momentum are cosine over the whole 500k
    c = math.cos(math.pi * 0.1)
    assert v50["lr"] == pytest.approx(peak)
    assert v50["wd"] == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + c))
    assert v50["mom"] == pytest.approx(1.0 + 0.5 * (0.992 - 1.0) * (1 + c))
    assert v50["teacher_temp"] == pytest.approx(0.07)
    # 87.5k (the release checkpoint): LR ≈ 0.98 × peak, WD ≈ 0.067, momentum ≈ 0.9926 (spec §5)
    assert v875["lr"] / peak == pytest.approx(0.982, abs=2e-3)
    assert v875["wd"] == pytest.approx(0.067, abs=1e-3)
    assert v875["mom"] == pytest.approx(0.9926, abs=1e-4)
    # 500k: floors
    assert v500 == pytest.approx(
        {"lr": 1e-6, "last_layer_lr": 1e-6, "wd": 0.4, "mom": 1.0, "teacher_temp": 0.07}
    )


def test_teacher_temp_warmup_and_last_layer_freeze(release):
    _, s = release
    assert s.teacher_temp(37_500 // 2) == pytest.approx(0.055)
    assert s.teacher_temp(37_500) == pytest.approx(0.07)
    assert s.last_layer_lr(1_249) == 0.0
    assert s.last_layer_lr(1_250) == s.lr(1_250) > 0


def test_stop_at_iteration_does_not_change_the_horizon():
    full = build_schedules(load_config(None, ["train.stop_at_iteration=500000"]), 16)
    early = build_schedules(load_config(None, ["train.stop_at_iteration=1000"]), 16)
    for t in (0, 999, 87_500):
        assert full.values(t) == early.values(t)


def test_cosine_schedule_phases():
    s = CosineSchedule(1.0, 0.0, total_iters=30, warmup_iters=10, start_warmup_value=0.5, freeze_iters=10)
    assert [s(t) for t in (0, 9)] == [0.0, 0.0]
    assert s(10) == 0.5 and s(15) == pytest.approx(0.75)
    assert s(20) == pytest.approx(1.0) and s(25) == pytest.approx(0.5) and s(30) == 0.0 and s(99) == 0.0
