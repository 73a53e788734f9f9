"""iBOT block masks (BEiT-style) and their per-batch sampling.

A mask is built from random rectangles of patches: each rectangle has a target area uniform between
min_num_patches and the remaining budget (budget capped by ``max_num_patches`` per rectangle; as in
BEiT/DINOv2, when fewer than min_num_patches remain the area lies between the two, which lets the last
rectangle top the mask up; the realised area after rounding h and w can fall one below the target), an aspect
ratio log-uniform in [min_aspect, 1/min_aspect], and a uniform position; up to 10 attempts are made per
rectangle and a rectangle is accepted only if it adds at least one and at most ``budget`` new patches.
Rectangles are added until the requested number of patches is reached or a rectangle cannot be placed (so a
mask may hold slightly fewer patches than requested, never more). All randomness comes from the numpy
``Generator`` passed in, so masks are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

MAX_ATTEMPTS = 10

MaskFn = Callable[[int, np.random.Generator], torch.Tensor]
"""Signature of the ``mask_generator_fn`` of :func:`gpfm.pretrain.data.collate_multicrop`:
``(n_crops, rng) -> (n_crops, N) bool``."""


class MaskingGenerator:
    """BEiT block-mask generator on a patch grid.

    Args:
        grid: (height, width) of the patch grid (16×16 for ViT-/14 at 224 px).
        max_num_patches: cap on patches one rectangle may add (0.5·N = 128 in the release).
        min_num_patches: minimum rectangle area in patches (4).
        min_aspect: aspect ratios are log-uniform in [min_aspect, 1/min_aspect] (0.3).
    """

    def __init__(
        self,
        grid: tuple[int, int] = (16, 16),
        max_num_patches: int = 128,
        min_num_patches: int = 4,
        min_aspect: float = 0.3,
    ) -> None:
        if not 0 < min_aspect <= 1:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.height, self.width = grid
        self.max_num_patches = max_num_patches
        self.min_num_patches = min_num_patches
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))

    @property
    def num_patches(self) -> int:
        """N = height · width."""
        return self.height * self.width

    def _add_block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        for _ in range(MAX_ATTEMPTS):
            lo, hi = sorted((self.min_num_patches, budget))
            area = rng.uniform(lo, hi)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (0 < h < self.height and 0 < w < self.width):
                continue
            top = int(rng.integers(0, self.height - h + 1))
            left = int(rng.integers(0, self.width - w + 1))
            window = mask[top : top + h, left : left + w]
            new = h * w - int(window.sum())
            if 0 < new <= budget:
                window[...] = True
                return new
        return 0

    def __call__(self, num_masking_patches: int, rng: np.random.Generator) -> np.ndarray:
        """A (height, width) bool mask with at most ``num_masking_patches`` True entries."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masking_patches:
            budget = min(num_masking_patches - count, self.max_num_patches)
            added = self._add_block(mask, budget, rng)
            if added == 0:
                break
            count += added
        return mask


def sample_batch_masks(
    n_crops: int,
    grid: tuple[int, int] = (16, 16),
    mask_probability: float = 0.5,
    ratio_min_max: tuple[float, float] = (0.1, 0.5),
    rng: np.random.Generator | None = None,
    *,
    generator: MaskingGenerator | None = None,
) -> torch.Tensor:
    """IBOT masks of one per-process batch of global crops, as the release draws them.

    ``int(n_crops · mask_probability)`` crops are masked; crop i of them targets
    ``int(N · U(r_i, r_{i+1}))`` patches where r = linspace(ratio_min, ratio_max, n_masked + 1) (ratios spread
    evenly over the range in buckets); the other crops get empty masks; the list is then shuffled.

    Args:
        n_crops: number of global crops 2B.
        grid: patch grid.
        mask_probability: fraction of crops that are masked.
        ratio_min_max: range of mask ratios.
        rng: numpy Generator (required: all randomness comes from it).
        generator: block generator (default: BEiT blocks with a per-rectangle cap of 0.5·N).

    Returns:
        (n_crops, N) bool tensor, row-major over the grid.
    """
    if rng is None:
        raise ValueError("sample_batch_masks needs rng=np.random.Generator (masks must be reproducible)")
    n = grid[0] * grid[1]
    gen = generator or MaskingGenerator(grid, max_num_patches=int(0.5 * n))
    n_masked = int(n_crops * mask_probability)
    bounds = np.linspace(ratio_min_max[0], ratio_min_max[1], n_masked + 1)
    masks = [gen(int(n * rng.uniform(bounds[i], bounds[i + 1])), rng) for i in range(n_masked)]
    masks += [np.zeros(grid, dtype=bool) for _ in range(n_crops - n_masked)]
    order = rng.permutation(n_crops)
    return torch.from_numpy(np.stack([masks[i] for i in order]).reshape(n_crops, n))


def masked_tokens_upper_bound(
    n_crops: int,
    n_tokens: int,
    mask_probability: float = 0.5,
    ratio_min_max: tuple[float, float] = (0.1, 0.5),
) -> int:
    """Static upper bound on ``masks.sum()`` of :func:`sample_batch_masks` (fixed head-call shapes).

    Σ_i int(N · r_{i+1}) over the masked crops — the release's ``upperbound``.
    """
    n_masked = int(n_crops * mask_probability)
    bounds = np.linspace(ratio_min_max[0], ratio_min_max[1], n_masked + 1)
    return int(sum(int(n_tokens * bounds[i + 1]) for i in range(n_masked)))


class BatchMasker:
    """A ``mask_generator_fn`` for :func:`gpfm.pretrain.data.collate_multicrop`: ``(n_crops, rng) -> masks``.

    Args:
        grid: patch grid of the global crops.
        mask_probability: fraction of crops masked.
        ratio_min_max: mask-ratio range.
        min_num_patches: minimum rectangle area.
        min_aspect: aspect-ratio bound.
        max_fraction_per_block: per-rectangle cap as a fraction of N (0.5).
    """

    def __init__(
        self,
        grid: tuple[int, int] = (16, 16),
        mask_probability: float = 0.5,
        ratio_min_max: tuple[float, float] = (0.1, 0.5),
        min_num_patches: int = 4,
        min_aspect: float = 0.3,
        max_fraction_per_block: float = 0.5,
    ) -> None:
        self.grid = tuple(grid)
        self.mask_probability = mask_probability
        self.ratio_min_max = tuple(ratio_min_max)
        n = grid[0] * grid[1]
        self.generator = MaskingGenerator(
            self.grid, int(max_fraction_per_block * n), min_num_patches, min_aspect
        )

    def __call__(self, n_crops: int, rng: np.random.Generator) -> torch.Tensor:
        """(n_crops, N) bool masks drawn from ``rng``."""
        return sample_batch_masks(
            n_crops, self.grid, self.mask_probability, self.ratio_min_max, rng, generator=self.generator
        )

    def upper_bound(self, n_crops: int) -> int:
        """Static bound on the masked-token count of a batch of ``n_crops``."""
        n = self.grid[0] * self.grid[1]
        return masked_tokens_upper_bound(n_crops, n, self.mask_probability, self.ratio_min_max)
