"""Expert patch distillation loss: per-token cosine + Smooth-L1 after aligning the expert's token grid."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

COS_EPS = 1e-8
AlignMode = Literal["teacher_bicubic_up", "student_down"]
AlignDtype = Literal["fp16", "bf16", "fp32"]
TokenSelection = Literal["all", "unmasked_only"]
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resample_token_grid(
    tokens: torch.Tensor,
    from_grid: tuple[int, int],
    to_grid: tuple[int, int],
    mode: str = "bicubic",
) -> torch.Tensor:
    """Resample row-major patch tokens on an (h, w) grid to another grid, as an image of D channels.

    (B, h·w, D) → (B, D, h, w) → ``F.interpolate(size=to_grid, mode, align_corners=False)`` → (B, h'·w', D).
    Computed in the dtype of ``tokens`` (cast beforehand to choose it). Bicubic and bilinear weights sum to 1
    and borders are replicated, so a constant field stays constant. ``mode="area"`` (adaptive average
    pooling) has no ``align_corners``. Same grid → returned unchanged.

    Args:
        tokens: (B, N, D) with N = from_grid[0]·from_grid[1].
        from_grid: (h, w) of ``tokens``.
        to_grid: (h', w') wanted.
        mode: any ``F.interpolate`` mode ("bicubic", "bilinear", "area", "nearest").
    """
    b, n, d = tokens.shape
    h, w = from_grid
    if n != h * w:
        raise ValueError(f"{n} tokens do not form the stated {h}x{w} grid")
    if tuple(to_grid) == (h, w):
        return tokens
    image = tokens.transpose(1, 2).reshape(b, d, h, w)
    kwargs = {"align_corners": False} if mode in ("bicubic", "bilinear", "linear", "trilinear") else {}
    out = F.interpolate(image, size=tuple(to_grid), mode=mode, **kwargs)
    return out.flatten(2).transpose(1, 2)


class ExpertPatchTerms(NamedTuple):
    """The patch loss and its two parts (for the decomposed logging of)."""

    loss: torch.Tensor
    mean_cos: torch.Tensor
    smooth_l1: torch.Tensor


class ExpertPatchLoss(nn.Module):
    """L_p^e = w_cos·(1 − mean_t cos(h_e(s_t), up(t^e)_t)) + w_l1·SmoothL1_β=1(h_e(s), up(t^e)).

    ``student_patches`` are the distill-head outputs h_e(s_p) of the (masked) student global crop, (B, Ns, D),
    on ``student_grid`` (16×16 for ViT-/14 at 224); ``teacher_patches`` are expert e's final-norm spatial
    tokens of the same crop, (B, Nt, D), on ``teacher_grid`` (14×14 for ViT-/16 at 224). The teacher carries
    no gradient.

    Alignment (, switch #8):
        ``teacher_bicubic_up`` [F]: up(·) = bicubic resampling of the teacher grid to the student grid
        (align_corners False) in ``align_dtype`` (``fp16`` [F], ``fp32`` [I]); the student is untouched.
        ``student_down`` [I]: the student tokens are area-resampled (adaptive average) to the teacher grid in
        ``align_dtype``; the teacher is untouched.
    Both operands are then cast to fp32.

    Reduction: cos is taken per token along channels (``F.cosine_similarity``, eps 1e-8); its mean runs over
    every selected (crop, token); SmoothL1 (β = 1: 0.5·r² if |r| < 1 else |r| − 0.5) is the mean over every
    element of the selected tokens. ``tokens="all"`` [F] selects every position, masked ones included
    (feature-regression MIM); ``unmasked_only`` [I, switch #5] drops positions where ``masks`` is True —
    after ``student_down`` a teacher-grid position is dropped when any masked student token enters its
    average.

    Args:
        cos_weight: w_cos (0.9).
        smooth_l1_weight: w_l1 (0.1).
        align: grid alignment.
        align_dtype: dtype of the resampling arithmetic.
        tokens: token selection.
    """

    def __init__(
        self,
        cos_weight: float = 0.9,
        smooth_l1_weight: float = 0.1,
        align: AlignMode = "teacher_bicubic_up",
        align_dtype: AlignDtype = "fp16",
        tokens: TokenSelection = "all",
    ) -> None:
        super().__init__()
        if align not in ("teacher_bicubic_up", "student_down"):
            raise ValueError(f"unknown align {align!r}; use 'teacher_bicubic_up' or 'student_down'")
        if align_dtype not in _DTYPES:
            raise ValueError(f"unknown align_dtype {align_dtype!r}; use one of {sorted(_DTYPES)}")
        if tokens not in ("all", "unmasked_only"):
            raise ValueError(f"unknown tokens {tokens!r}; use 'all' or 'unmasked_only'")
        self.cos_weight, self.smooth_l1_weight = cos_weight, smooth_l1_weight
        self.align, self.align_dtype, self.tokens = align, align_dtype, tokens

    def _aligned(
        self,
        student: torch.Tensor,
        student_grid: tuple[int, int],
        teacher: torch.Tensor,
        teacher_grid: tuple[int, int],
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        dtype = _DTYPES[self.align_dtype]
        keep = None if masks is None else ~masks
        if self.align == "teacher_bicubic_up":
            teacher = resample_token_grid(teacher.to(dtype), teacher_grid, student_grid, mode="bicubic")
        else:
            student = resample_token_grid(student.to(dtype), student_grid, teacher_grid, mode="area")
            if masks is not None:
                frac_masked = resample_token_grid(
                    masks.float().unsqueeze(-1), student_grid, teacher_grid, "area"
                )
                keep = frac_masked.squeeze(-1) == 0
        return student.float(), teacher.float(), keep

    def parts(
        self,
        student_patches: torch.Tensor,
        student_grid: tuple[int, int],
        teacher_patches: torch.Tensor,
        teacher_grid: tuple[int, int],
        masks: torch.Tensor | None = None,
    ) -> ExpertPatchTerms:
        """The loss with its mean cosine and SmoothL1 parts; arguments as in :meth:`forward`."""
        if student_patches.shape[-1] != teacher_patches.shape[-1]:
            raise ValueError(
                f"student patch width {student_patches.shape[-1]} != expert token width "
                f"{teacher_patches.shape[-1]}; the distill head's out_dim must match the expert"
            )
        if self.tokens == "unmasked_only" and masks is None:
            raise ValueError("tokens='unmasked_only' needs the (B, Ns) student masks")
        student, teacher, keep = self._aligned(
            student_patches, tuple(student_grid), teacher_patches.detach(), tuple(teacher_grid), masks
        )
        if self.tokens == "unmasked_only":
            student, teacher = student[keep], teacher[keep]  # (n_selected, D)
            if student.shape[0] == 0:
                raise ValueError("tokens='unmasked_only' but every token is masked in this batch")
        cos = F.cosine_similarity(student, teacher, dim=-1, eps=COS_EPS)
        mean_cos = cos.mean()
        smooth_l1 = F.smooth_l1_loss(student, teacher, beta=1.0, reduction="mean")
        loss = self.cos_weight * (1.0 - mean_cos) + self.smooth_l1_weight * smooth_l1
        return ExpertPatchTerms(loss=loss, mean_cos=mean_cos, smooth_l1=smooth_l1)

    def forward(
        self,
        student_patches: torch.Tensor,
        student_grid: tuple[int, int],
        teacher_patches: torch.Tensor,
        teacher_grid: tuple[int, int],
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar L_p^e.

        Args:
            student_patches: (B, Ns, D) projected student patch tokens, row-major on ``student_grid``.
            student_grid: (h_s, w_s), e.g. (16, 16).
            teacher_patches: (B, Nt, D) expert patch tokens, row-major on ``teacher_grid``.
            teacher_grid: (h_t, w_t), e.g. (14, 14).
            masks: (B, Ns) bool iBOT masks of the student crop (True = masked); needed for ``unmasked_only``.
        """
        return self.parts(student_patches, student_grid, teacher_patches, teacher_grid, masks).loss
