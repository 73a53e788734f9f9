"""KoLeo and expert losses against hand-written loop computations; grid resampling checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpfm.pretrain.losses import ExpertClsLoss, ExpertPatchLoss, KoLeoLoss, resample_token_grid


def _koleo_by_hand(x: np.ndarray) -> float:
    b, d = x.shape
    xs = [row / max(math.sqrt(sum(v * v for v in row)), 1e-8) for row in x.astype(np.float64)]
    total = 0.0
    for i in range(b):
        best, best_dot = -1, -math.inf
        for j in range(b):
            if j != i:
                dot = sum(a * c for a, c in zip(xs[i], xs[j], strict=True))
                if dot > best_dot:
                    best, best_dot = j, dot
        dist = math.sqrt(sum((a - c + 1e-8) ** 2 for a, c in zip(xs[i], xs[best], strict=True)))
        total += -math.log(dist + 1e-8)
    return total / b


def test_koleo_matches_hand_loop() -> None:
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    value = KoLeoLoss()(torch.from_numpy(x))
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(_koleo_by_hand(x), rel=1e-5)


def test_koleo_exact_duplicate_is_large_but_finite_in_fp32() -> None:
    d = 1024
    x = torch.randn(4, d, generator=torch.Generator().manual_seed(1))
    x[1] = x[0]
    dists = KoLeoLoss.nearest_neighbour_distances(x)
    assert dists[0].item() == pytest.approx(1e-8 * math.sqrt(d), rel=1e-3)
    per_sample = -math.log(1e-8 * math.sqrt(d) + 1e-8)  # ≈ 14.92 (spec formula; its "≈16.5" does not follow)
    assert per_sample == pytest.approx(14.924, abs=1e-3)
    others = -torch.log(dists[2:] + 1e-8)
    expected = (2 * per_sample + others.sum().item()) / 4
    # fp16 input and an active bf16 autocast do not change the fp32 computation
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = KoLeoLoss()(x.half())
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(expected, rel=2e-3)  # x.half() perturbs only the non-duplicate rows


def test_koleo_without_upcast_follows_the_input_dtype() -> None:
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(2)).half()
    x[1] = x[0]
    value = KoLeoLoss(upcast_fp32=False)(x)
    assert value.dtype == torch.float16 and torch.isinf(value)  # upstream fp16: the 1e-8 epsilons vanish
    assert torch.isfinite(KoLeoLoss()(x))


def test_koleo_gradient_and_errors() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    KoLeoLoss()(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="B >= 2"):
        KoLeoLoss()(torch.randn(1, 3))


def test_expert_cls_loss_is_one_minus_mean_cosine() -> None:
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], requires_grad=True)
    t = torch.tensor([[2.0, 0.0], [-1.0, -1.0], [1.0, 1.0]], requires_grad=True)
    value = ExpertClsLoss()(s, t)
    assert value.item() == pytest.approx(1 - (1.0 + -1.0 + 1 / math.sqrt(2)) / 3, abs=1e-6)
    value.backward()
    assert s.grad is not None and t.grad is None  # the expert target never receives a gradient
    with pytest.raises(ValueError, match="out_dim"):
        ExpertClsLoss()(torch.randn(2, 3), torch.randn(2, 4))


def _cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _bicubic_1d_weights(n_in: int, n_out: int) -> np.ndarray:
    """Keys cubic (a = −0.75), align_corners False, border replicate — written from the definition."""
    w = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = (o + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for tap in range(base - 1, base + 3):
            w[o, min(max(tap, 0), n_in - 1)] += _cubic(src - tap)
    return w


def test_resample_token_grid_matches_hand_bicubic_and_keeps_constants() -> None:
    rng = np.random.default_rng(2)
    field = rng.normal(size=(14, 14, 3))
    tokens = torch.from_numpy(field.reshape(1, 196, 3)).float()
    out = resample_token_grid(tokens, (14, 14), (16, 16))
    assert out.shape == (1, 256, 3)
    w = _bicubic_1d_weights(14, 16)
    expected = np.einsum("ai,bj,ijc->abc", w, w, field).reshape(256, 3)
    assert np.allclose(out[0].numpy(), expected, atol=1e-5)
    const = torch.full((2, 196, 4), 3.25)
    assert torch.allclose(
        resample_token_grid(const, (14, 14), (16, 16)), torch.full((2, 256, 4), 3.25), atol=1e-6
    )
    assert resample_token_grid(tokens, (14, 14), (14, 14)) is tokens
    with pytest.raises(ValueError, match="grid"):
        resample_token_grid(tokens, (16, 16), (14, 14))


def _patch_by_hand(s: np.ndarray, t: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
    cos_sum, l1_sum, n_tok, n_el = 0.0, 0.0, 0, 0
    for b in range(s.shape[0]):
        for i in range(s.shape[1]):
            if not keep[b, i]:
                continue
            a, c = s[b, i], t[b, i]
            cos_sum += float(a @ c) / (np.linalg.norm(a) * np.linalg.norm(c))
            n_tok += 1
            for r in a - c:
                l1_sum += 0.5 * r * r if abs(r) < 1 else abs(r) - 0.5
                n_el += 1
    return cos_sum / n_tok, l1_sum / n_el


@pytest.mark.parametrize("tokens", ["all", "unmasked_only"])
def test_expert_patch_loss_matches_hand_computation(tokens: str) -> None:
    g = torch.Generator().manual_seed(3)
    student = (torch.randn(2, 16, 5, generator=g) * 2).requires_grad_(True)  # 4x4 student grid
    teacher = (torch.randn(2, 9, 5, generator=g) * 2).requires_grad_(True)  # 3x3 expert grid
    masks = torch.rand(2, 16, generator=g) < 0.4
    loss = ExpertPatchLoss(align_dtype="fp32", tokens=tokens)
    terms = loss.parts(student, (4, 4), teacher, (3, 3), masks)
    up = resample_token_grid(teacher.detach(), (3, 3), (4, 4)).numpy()
    keep = np.ones((2, 16), bool) if tokens == "all" else ~masks.numpy()
    mean_cos, smooth = _patch_by_hand(
        student.detach().numpy().astype(np.float64), up.astype(np.float64), keep
    )
    assert terms.mean_cos.item() == pytest.approx(mean_cos, abs=1e-5)
    assert terms.smooth_l1.item() == pytest.approx(smooth, rel=1e-5)
    assert terms.loss.item() == pytest.approx(0.9 * (1 - mean_cos) + 0.1 * smooth, rel=1e-5)
    terms.loss.backward()
    assert student.grad is not None and teacher.grad is None
    if tokens == "unmasked_only":  # masked positions receive no gradient
        assert (student.grad[masks] == 0).all() and (student.grad[~masks] != 0).any()


def test_expert_patch_loss_alignment_options() -> None:
    g = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(2, 256, 8, generator=g), torch.randn(2, 196, 8, generator=g)
    fp32 = ExpertPatchLoss(align_dtype="fp32")(student, (16, 16), teacher, (14, 14))
    fp16 = ExpertPatchLoss(align_dtype="fp16")(student, (16, 16), teacher, (14, 14))
    assert fp16.item() == pytest.approx(fp32.item(), abs=2e-3) and fp16.item() != fp32.item()
    # student_down: the student is area-averaged to 14x14, the teacher untouched
    down = ExpertPatchLoss(align="student_down", align_dtype="fp32").parts(
        student, (16, 16), teacher, (14, 14)
    )
    pooled = torch.nn.functional.adaptive_avg_pool2d(student.transpose(1, 2).reshape(2, 8, 16, 16), (14, 14))
    pooled = pooled.flatten(2).transpose(1, 2)
    cos = torch.nn.functional.cosine_similarity(pooled, teacher, dim=-1).mean()
    assert down.mean_cos.item() == pytest.approx(cos.item(), abs=1e-6)
    # with student_down + unmasked_only, any teacher cell touched by a masked student token is dropped
    masks = torch.zeros(2, 256, dtype=torch.bool)
    masks[:, 0] = True  # student (0,0) only overlaps teacher cell (0,0)
    sel = ExpertPatchLoss(align="student_down", align_dtype="fp32", tokens="unmasked_only").parts(
        student, (16, 16), teacher, (14, 14), masks
    )
    expected = torch.nn.functional.cosine_similarity(pooled[:, 1:], teacher[:, 1:], dim=-1).mean()
    assert sel.mean_cos.item() == pytest.approx(expected.item(), abs=1e-6)


def test_expert_patch_loss_errors() -> None:
    with pytest.raises(ValueError, match="align"):
        ExpertPatchLoss(align="learned")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="masks"):
        ExpertPatchLoss(tokens="unmasked_only")(torch.randn(1, 4, 2), (2, 2), torch.randn(1, 4, 2), (2, 2))
    with pytest.raises(ValueError, match="width"):
        ExpertPatchLoss()(torch.randn(1, 4, 2), (2, 2), torch.randn(1, 4, 3), (2, 2))
