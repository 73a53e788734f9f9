"""iBOT masking: BEiT rectangles, budgets, per-batch ratio buckets, shuffling, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpfm.pretrain.masking import BatchMasker, MaskingGenerator, masked_tokens_upper_bound, sample_batch_masks


def test_single_block_is_a_rectangle_within_budget_and_aspect() -> None:
    gen = MaskingGenerator((16, 16), max_num_patches=128, min_num_patches=4, min_aspect=0.3)
    rng = np.random.default_rng(0)
    log_aspects = []
    for _ in range(300):
        mask = np.zeros((16, 16), dtype=bool)
        budget = int(rng.integers(4, 129))
        added = gen._add_block(mask, budget, rng)
        if added == 0:
            continue
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert mask.sum() == added == h * w  # a filled rectangle
        # target area >= 4; rounding h = round(sqrt(area·a)), w = round(sqrt(area/a)) can realise 3 (BEiT)
        assert 3 <= added <= budget
        assert h < 16 and w < 16
        log_aspects.append(math.log(h / w))
    assert len(log_aspects) > 250
    # log-uniform aspect in [0.3, 1/0.3]: symmetric around 0 and bounded (up to rounding of h and w)
    assert abs(np.mean(log_aspects)) < 0.15
    assert max(abs(a) for a in log_aspects) < math.log(1 / 0.3) + 0.7


def test_masks_never_exceed_request_and_usually_hit_it() -> None:
    gen = MaskingGenerator((16, 16), max_num_patches=128)
    rng = np.random.default_rng(1)
    for target in (0, 10, 50, 128):
        counts = np.array([gen(target, rng).sum() for _ in range(100)])
        assert (counts <= target).all()
        assert counts.mean() >= 0.97 * target


def test_batch_masks_ratio_buckets_shuffle_and_reproducibility() -> None:
    n_crops, n = 16, 256
    masks = sample_batch_masks(n_crops, (16, 16), 0.5, (0.1, 0.5), np.random.default_rng(2))
    assert masks.dtype == torch.bool and masks.shape == (n_crops, n)
    counts = sorted(masks.sum(1).tolist())
    assert counts[: n_crops - 8] == [0] * 8  # int(16 * 0.5) = 8 crops masked
    bounds = np.linspace(0.1, 0.5, 9)
    masked = counts[8:]
    # crop i targets int(N * U(r_i, r_{i+1})): sorted counts fall in successive buckets (up to a few patches)
    for i, c in enumerate(masked):
        assert int(n * bounds[i]) - 6 <= c <= int(n * bounds[i + 1])
    assert max(masked) <= n // 2
    assert sum(masked) <= masked_tokens_upper_bound(n_crops, n)
    again = sample_batch_masks(n_crops, (16, 16), 0.5, (0.1, 0.5), np.random.default_rng(2))
    assert torch.equal(masks, again)
    # shuffled: which crops are masked changes with the seed
    patterns = {
        tuple((sample_batch_masks(8, (16, 16), rng=np.random.default_rng(s)).sum(1) > 0).tolist())
        for s in range(20)
    }
    assert len(patterns) > 5


def test_batch_masker_and_errors() -> None:
    masker = BatchMasker((16, 16))
    m = masker(6, np.random.default_rng(3))
    assert m.shape == (6, 256) and int((m.sum(1) > 0).sum()) == 3
    assert masker.upper_bound(6) == masked_tokens_upper_bound(6, 256)
    with pytest.raises(ValueError, match="rng"):
        sample_batch_masks(4, (16, 16))
