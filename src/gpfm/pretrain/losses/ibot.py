"""iBOT masked-patch loss: per-token cross-entropy at masked positions, weighted per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpfm.pretrain.losses._centering import sinkhorn_knopp, softmax_centered, update_center_


class IBOTPatchLoss(nn.Module):
    """iBOT loss on the prototype logits of masked patch tokens (Zhou et al. 2022).

    The teacher sees the unmasked global crop; the student sees it with masked patches replaced by the
    ``mask_token``. Only masked positions are compared. Teacher targets use a **separate** (1, K) center
    buffer from the DINO loss: p_T,t = softmax((z_T,t − c)/τ_T) ([F]) or Sinkhorn-Knopp ([I]); the center
    update is c ← m·c + (1 − m)·mean_t(z_T,t) over the masked tokens of all processes.

    Loss over the 2B global crops of the per-process batch, with n_i masked tokens in crop i:
        L_iBOT = (1/2B) Σ_{i: n_i > 0} (1/n_i) Σ_{t masked in i} CE(p_T,t, p_S,t),
        CE(p_T,t, p_S,t) = −Σ_k p_T,tk · log softmax(z_S,t / τ_S)_k,   τ_S = 0.1.
    Each masked crop weighs equally whatever its mask ratio; unmasked crops contribute 0 but count in 2B.
    Computed in fp32.

    Token order: row r of ``student_logits_masked`` / ``teacher_probs_masked`` is the r-th True entry of
    ``masks.flatten()`` (row-major, i.e. ``masks.flatten().nonzero()``), as the training loop gathers them.

    Args:
        out_dim: number of prototypes K.
        student_temp: τ_S.
        center_momentum: m of the center EMA.
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """p_T = softmax((z_T − c)/τ_T) of (M, K) masked-token teacher logits, fp32."""
        return softmax_centered(teacher_logits, self.center, teacher_temp)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self, teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3
    ) -> torch.Tensor:
        """Sinkhorn-Knopp targets of (M, K) masked-token teacher logits (fp32, all-reduced).

        Pass only the valid masked rows (no padding rows of a static buffer): every row counts as a sample.
        """
        return sinkhorn_knopp(teacher_logits, teacher_temp, n_iterations)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA update of the center from the (M, K) teacher logits of the masked tokens (valid rows only)."""
        update_center_(self.center, teacher_logits, self.center_momentum)

    def forward_masked(
        self,
        student_logits_masked: torch.Tensor,
        teacher_probs_masked: torch.Tensor,
        masks: torch.Tensor,
        *,
        allow_padding: bool = False,
    ) -> torch.Tensor:
        """L_iBOT (scalar) from the masked tokens' logits/targets; see the class docstring.

        Args:
            student_logits_masked: (M, K) student logits of the masked tokens, in ``masks`` row-major order.
            teacher_probs_masked: (M, K) teacher probabilities of the same tokens.
            masks: (2B, N) bool, True where the student's patch was masked.
            allow_padding: accept M larger than ``masks.sum()`` (a static upper-bound buffer); the rows
                beyond ``masks.sum()`` are ignored. Without it M must equal ``masks.sum()``.
        """
        if masks.dtype != torch.bool or masks.ndim != 2:
            raise ValueError(f"masks must be a (2B, N) bool tensor, got {masks.dtype} {tuple(masks.shape)}")
        n_masked = int(masks.sum())
        m = student_logits_masked.shape[0]
        if teacher_probs_masked.shape != student_logits_masked.shape:
            raise ValueError(
                f"student {tuple(student_logits_masked.shape)} and teacher "
                f"{tuple(teacher_probs_masked.shape)} masked-token tensors differ in shape"
            )
        if m < n_masked or (m > n_masked and not allow_padding):
            raise ValueError(
                f"got {m} masked-token rows but masks has {n_masked} True entries "
                "(pass allow_padding=True for a static upper-bound buffer)"
            )
        log_p_s = F.log_softmax(student_logits_masked[:n_masked].float() / self.student_temp, dim=-1)
        ce = -(teacher_probs_masked[:n_masked].float() * log_p_s).sum(dim=-1)  # (n_masked,)
        per_crop = masks.sum(dim=1)  # n_i
        crop_of_token = torch.arange(masks.shape[0], device=masks.device).repeat_interleave(per_crop)
        weights = 1.0 / per_crop[crop_of_token].clamp(min=1).float()
        return (ce * weights).sum() / masks.shape[0]
