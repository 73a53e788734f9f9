"""UNKD pretraining (unkd-pretraining.md): DINOv2 self-distillation + online distillation from frozen experts.

Components (one concern per module; names re-exported lazily here so ``import gpfm.pretrain`` stays cheap):

- :mod:`gpfm.pretrain.heads` — ``DINOHead``, ``DistillHead``, ``head_gains``.
- :mod:`gpfm.pretrain.losses` — ``DINOLoss``, ``IBOTPatchLoss``, ``KoLeoLoss``, ``ExpertClsLoss``,
  ``ExpertPatchLoss``, ``resample_token_grid``.
- :mod:`gpfm.pretrain.masking` — ``MaskingGenerator``, ``sample_batch_masks``, ``BatchMasker``.
- :mod:`gpfm.pretrain.augment` — ``MultiCropAugmentation``.
- :mod:`gpfm.pretrain.data` — ``TileFolderDataset``, ``SlideTileDataset``, ``InfiniteShardedSampler``,
  ``collate_multicrop``, ``sample_seed``, ``seed_worker``.
- :mod:`gpfm.pretrain.experts` — ``build_expert``, ``Expert``, ``ExpertTargets``.

The training side (config, schedules, optimizer, meta-architecture, loop, checkpoints, export) lives in the
other modules of this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DINOHead": "heads",
    "DistillHead": "heads",
    "head_gains": "heads",
    "DINOLoss": "losses",
    "IBOTPatchLoss": "losses",
    "KoLeoLoss": "losses",
    "ExpertClsLoss": "losses",
    "ExpertPatchLoss": "losses",
    "resample_token_grid": "losses",
    "MaskingGenerator": "masking",
    "sample_batch_masks": "masking",
    "BatchMasker": "masking",
    "MultiCropAugmentation": "augment",
    "TileFolderDataset": "data",
    "SlideTileDataset": "data",
    "InfiniteShardedSampler": "data",
    "collate_multicrop": "data",
    "sample_seed": "data",
    "seed_worker": "data",
    "build_expert": "experts",
    "Expert": "experts",
    "ExpertTargets": "experts",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"gpfm.pretrain.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gpfm.pretrain' has no attribute {name!r}")
