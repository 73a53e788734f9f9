"""Expert CLS distillation loss: 1 − mean cosine between projected student CLS and the expert's target."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

COS_EPS = 1e-8


class ExpertClsLoss(nn.Module):
    """L_cls^e = 1 − (1/B) Σ_b cos(h_e(s_cls,b), t_cls,b^e)  (config ``radio``).

    ``student`` is the distill-head output h_e(s_cls) of a global crop (B, D_e); ``target`` is expert e's CLS
    target computed on **the same** crop (B, D_e) — no cross-view swap. cos(a, b) = a·b / max(‖a‖‖b‖, 1e-8)
    (``F.cosine_similarity``), computed in fp32; the target carries no gradient. Scale-invariant, so the CONCH
    target's L2 normalisation is irrelevant here. Mean over the batch (stack both global crops into B to
    average over crops and batch as the release does).
    """

    def forward(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar 1 − mean cosine of (B, D) student projections and (B, D) expert targets."""
        if student.shape != target.shape:
            raise ValueError(
                f"student {tuple(student.shape)} and expert target {tuple(target.shape)} differ; "
                "the distill head's out_dim must equal the expert's CLS dimension"
            )
        cos = F.cosine_similarity(student.float(), target.detach().float(), dim=-1, eps=COS_EPS)
        return 1.0 - cos.mean()
