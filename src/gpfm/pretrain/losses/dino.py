"""DINO CLS-token loss: cross-entropy between centred, sharpened teacher and student prototype outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpfm.pretrain.losses._centering import sinkhorn_knopp, softmax_centered, update_center_


class DINOLoss(nn.Module):
    """DINO self-distillation loss on CLS prototype logits (Caron et al. 2021, Eq. 3).

    Teacher targets (computed separately, no gradient), for the teacher's global views g = 1, 2:
        p_T^g = softmax((z_T^g − c) / τ_T)                       (:meth:`softmax_center_teacher`, [F])
        or Sinkhorn-Knopp(z_T^g / τ_T, 3 iterations, fp32)          (:meth:`sinkhorn_knopp_teacher`, [I])
    with the center c a (1, K) registered buffer updated by :meth:`update_center`:
        c ← m·c + (1 − m)·mean_batch(z_T),  m = ``center_momentum`` = 0.9, all-reduced across processes.

    Loss, with student log-probabilities log p_S^v = log_softmax(z_S^v / τ_S), τ_S = ``student_temp`` = 0.1:
        CE(p_T, p_S) = −(1/B) Σ_b Σ_k p_T,bk · log p_S,bk                      (mean over the batch)
        L_DINO = (1/|P|) Σ_{(v, g) ∈ P} CE(p_T^g, p_S^v)
    where P holds every (student view v, teacher view g) pair except same-view pairs v = g (student views are
    ordered globals first, so student view i < n_teacher_views is the same crop as teacher view i). With 2
    global + 8 local student views |P| = 2·8 + 2 = 18 — the release normalisation. Computed in fp32.

    Shapes: ``student_logits`` a list of (B, K) tensors (one per student view), ``teacher_probs`` a list of
    (B, K) tensors (one per teacher view); returns a scalar.

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
        """p_T = softmax((z_T − c)/τ_T) of (..., K) teacher logits, fp32 (does not update the center)."""
        return softmax_centered(teacher_logits, self.center, teacher_temp)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self, teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3
    ) -> torch.Tensor:
        """Sinkhorn-Knopp targets of (B, K) teacher logits (fp32, all-reduced); see ``sinkhorn_knopp``."""
        return sinkhorn_knopp(teacher_logits, teacher_temp, n_iterations)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA update of the center from the (…, K) teacher logits of this step (all views, all processes)."""
        update_center_(self.center, teacher_logits, self.center_momentum)

    def pair_losses(
        self, student_logits: list[torch.Tensor], teacher_probs: list[torch.Tensor]
    ) -> torch.Tensor:
        """The matrix of CE(p_T^g, p_S^v): shape (n_student_views, n_teacher_views), fp32.

        Useful to log the local-crop and global-crop parts separately (upstream names
        ``dino_local_crops_loss`` / ``dino_global_crops_loss``); :meth:`forward` averages its off-diagonal
        part.
        """
        rows = []
        for logits in student_logits:
            log_p_s = F.log_softmax(logits.float() / self.student_temp, dim=-1)
            rows.append(torch.stack([-(p_t.float() * log_p_s).sum(dim=-1).mean() for p_t in teacher_probs]))
        return torch.stack(rows)

    def forward(
        self,
        student_logits: list[torch.Tensor],
        teacher_probs: list[torch.Tensor],
        ignore_same_view: bool = True,
    ) -> torch.Tensor:
        """Mean CE over the (student view, teacher view) pairs; see the class docstring."""
        if not student_logits or not teacher_probs:
            raise ValueError("DINOLoss needs at least one student view and one teacher view")
        ce = self.pair_losses(student_logits, teacher_probs)
        keep = torch.ones_like(ce, dtype=torch.bool)
        if ignore_same_view:
            n_same = min(ce.shape)
            keep[torch.arange(n_same), torch.arange(n_same)] = False
        if not keep.any():
            raise ValueError("DINOLoss: no (student, teacher) pair left after removing same-view pairs")
        return ce[keep].mean()
