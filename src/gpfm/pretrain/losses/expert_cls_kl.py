"""Expert CLS distillation loss, KL variant (the GPFM code's generic default; the ViT-L release uses cosine)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ExpertClsKLLoss(nn.Module):
    """L_cls^e = KL(softmax(t/T) ‖ softmax(h/T)), averaged over the batch, with T = 1.

    The student projection h_e(s_cls) (B, D_e) and the expert's CLS target t (B, D_e) are each turned into a
    distribution over the D_e feature dimensions by a softmax (temperature ``temperature``, 1 in GPFM); the loss is
    Σ_d p_t,d (log p_t,d − log p_h,d) summed over dimensions and divided by B (``F.kl_div(log_softmax(h),
    softmax(t), reduction="batchmean")``), in fp32; the target carries no gradient. Unlike 1 − cos it is
    sensitive to the target's scale (a larger scale gives a peakier distribution), which is why it pairs with
    ``distill.teacher_feature_norm=ema_zscore``.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar KL of (B, D) student projections from (B, D) expert targets."""
        if student.shape != target.shape:
            raise ValueError(
                f"student {tuple(student.shape)} and expert target {tuple(target.shape)} differ; "
                "the distill head's out_dim must equal the expert's CLS dimension"
            )
        log_p_student = F.log_softmax(student.float() / self.temperature, dim=-1)
        p_target = F.softmax(target.detach().float() / self.temperature, dim=-1)
        return F.kl_div(log_p_student, p_target, reduction="batchmean")
