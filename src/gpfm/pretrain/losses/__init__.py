"""UNKD pretraining losses, one per file; each docstring states its formula.

- :class:`DINOLoss` — CLS self-distillation (centering or Sinkhorn-Knopp teacher targets).
- :class:`IBOTPatchLoss` — masked-patch self-distillation with per-image weighting.
- :class:`KoLeoLoss` — nearest-neighbour spreading regulariser (fp32).
- :class:`ExpertClsLoss` — 1 − cosine to a frozen expert's CLS target (``distill.cls_loss=cosine``).
- :class:`ExpertClsKLLoss` — KL between softmaxed expert target and student projection (``distill.cls_loss=kl``).
- :class:`ExpertPatchLoss` — 0.9·(1 − cosine) + 0.1·SmoothL1 to an expert's resampled token grid.
"""

from gpfm.pretrain.losses.dino import DINOLoss
from gpfm.pretrain.losses.expert_cls import ExpertClsLoss
from gpfm.pretrain.losses.expert_cls_kl import ExpertClsKLLoss
from gpfm.pretrain.losses.expert_patch import ExpertPatchLoss, ExpertPatchTerms, resample_token_grid
from gpfm.pretrain.losses.ibot import IBOTPatchLoss
from gpfm.pretrain.losses.koleo import KoLeoLoss

__all__ = [
    "DINOLoss",
    "ExpertClsKLLoss",
    "ExpertClsLoss",
    "ExpertPatchLoss",
    "ExpertPatchTerms",
    "IBOTPatchLoss",
    "KoLeoLoss",
    "resample_token_grid",
]
