"""DINO and iBOT losses against hand-written loop computations (math module, no vectorised torch code)."""

from __future__ import annotations

import math

import pytest
import torch

from gpfm.pretrain.losses import DINOLoss, IBOTPatchLoss


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _ce_rows(p_t: list[list[float]], z_s: list[list[float]], tau_s: float) -> list[float]:
    out = []
    for p, z in zip(p_t, z_s, strict=True):
        ls = _log_softmax([v / tau_s for v in z])
        out.append(-sum(pi * li for pi, li in zip(p, ls, strict=True)))
    return out


def test_dino_softmax_centering_and_center_update_by_hand() -> None:
    torch.manual_seed(0)
    loss = DINOLoss(out_dim=5, center_momentum=0.9)
    loss.center.copy_(torch.randn(1, 5))
    z = torch.randn(6, 5)
    probs = loss.softmax_center_teacher(z, teacher_temp=0.04)
    c = loss.center[0].tolist()
    for i in range(6):
        expected = _softmax([(z[i, k].item() - c[k]) / 0.04 for k in range(5)])
        assert probs[i].tolist() == pytest.approx(expected, abs=1e-6)
    loss.update_center(z)
    for k in range(5):
        mean_k = sum(z[i, k].item() for i in range(6)) / 6
        assert loss.center[0, k].item() == pytest.approx(0.9 * c[k] + 0.1 * mean_k, abs=1e-6)
    assert "center" in dict(loss.named_buffers())


def test_dino_loss_is_mean_over_18_cross_view_pairs() -> None:
    torch.manual_seed(1)
    b, k, n_local = 3, 7, 8
    loss = DINOLoss(out_dim=k, student_temp=0.1)
    students = [torch.randn(b, k, requires_grad=True) for _ in range(2 + n_local)]
    teachers = [torch.softmax(torch.randn(b, k) * 3, dim=-1) for _ in range(2)]
    value = loss(students, teachers)
    total, n_terms = 0.0, 0
    for v, zs in enumerate(students):
        for g, pt in enumerate(teachers):
            if v == g:
                continue
            ce = _ce_rows(pt.tolist(), zs.detach().tolist(), 0.1)
            total += sum(ce) / b
            n_terms += 1
    assert n_terms == 18
    assert value.item() == pytest.approx(total / 18, rel=1e-5)
    # with same-view pairs kept: 20 terms
    all_pairs = sum(
        sum(_ce_rows(pt.tolist(), zs.detach().tolist(), 0.1)) / b for zs in students for pt in teachers
    )
    assert loss(students, teachers, ignore_same_view=False).item() == pytest.approx(all_pairs / 20, rel=1e-5)
    # the pair matrix exposes the same terms for split logging
    ce = loss.pair_losses(students, teachers)
    assert ce.shape == (10, 2)
    assert ce[0, 1].item() == pytest.approx(
        sum(_ce_rows(teachers[1].tolist(), students[0].tolist(), 0.1)) / b, rel=1e-5
    )
    # gradients reach every student view and nothing else
    value.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in students)
    assert all(t.grad is None for t in teachers)


def _sinkhorn_by_hand(z: list[list[float]], temp: float, iters: int) -> list[list[float]]:
    b, k = len(z), len(z[0])
    q = [[math.exp(z[i][j] / temp) for i in range(b)] for j in range(k)]  # K x B
    s = sum(sum(r) for r in q)
    q = [[v / s for v in r] for r in q]
    for _ in range(iters):
        q = [[v / sum(r) / k for v in r] for r in q]
        col = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / col[i] / b for i in range(b)] for j in range(k)]
    return [[q[j][i] * b for j in range(k)] for i in range(b)]


@pytest.mark.parametrize("loss_cls", [DINOLoss, IBOTPatchLoss])
def test_sinkhorn_knopp_matches_hand_loop(loss_cls) -> None:
    torch.manual_seed(2)
    z = torch.randn(6, 4)
    probs = loss_cls(out_dim=4).sinkhorn_knopp_teacher(z, teacher_temp=0.5, n_iterations=3)
    expected = _sinkhorn_by_hand(z.tolist(), 0.5, 3)
    assert probs.dtype == torch.float32
    for i in range(6):
        assert probs[i].tolist() == pytest.approx(expected[i], abs=1e-5)
        assert sum(probs[i].tolist()) == pytest.approx(1.0, abs=1e-5)
    # logits whose exp overflows fp32 give the same (shift-invariant) targets thanks to the max subtraction
    shifted = loss_cls(out_dim=4).sinkhorn_knopp_teacher(z + 100.0, teacher_temp=0.5, n_iterations=3)
    assert torch.allclose(shifted, probs, atol=1e-5)


def test_ibot_per_image_weighting_with_unmasked_crops_counting() -> None:
    torch.manual_seed(3)
    k, n = 6, 9
    masks = torch.zeros(4, n, dtype=torch.bool)  # 2B = 4 crops; crops 1 and 3 unmasked
    masks[0, [0, 3, 4]] = True
    masks[2, [8]] = True
    m = int(masks.sum())
    student = torch.randn(m, k, requires_grad=True)
    teacher = torch.softmax(torch.randn(m, k), dim=-1)
    loss = IBOTPatchLoss(out_dim=k, student_temp=0.1)
    value = loss.forward_masked(student, teacher, masks)
    ce = _ce_rows(teacher.tolist(), student.detach().tolist(), 0.1)
    # rows are masks.flatten() order: crop 0 tokens 0,3,4 then crop 2 token 8
    expected = (sum(ce[:3]) / 3 + ce[3] / 1) / 4
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_ibot_padding_rows_and_shape_errors() -> None:
    torch.manual_seed(4)
    masks = torch.zeros(2, 4, dtype=torch.bool)
    masks[1, :2] = True
    student, teacher = torch.randn(5, 3), torch.softmax(torch.randn(5, 3), -1)
    loss = IBOTPatchLoss(out_dim=3)
    padded = loss.forward_masked(student, teacher, masks, allow_padding=True)
    exact = loss.forward_masked(student[:2], teacher[:2], masks)
    assert padded.item() == pytest.approx(exact.item())
    with pytest.raises(ValueError, match="allow_padding"):
        loss.forward_masked(student, teacher, masks)
    with pytest.raises(ValueError, match="bool"):
        loss.forward_masked(student[:2], teacher[:2], masks.int())


def test_ibot_center_is_separate_and_updates_by_hand() -> None:
    dino, ibot = DINOLoss(out_dim=3), IBOTPatchLoss(out_dim=3, center_momentum=0.5)
    z = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 1.0]])
    ibot.update_center(z)
    assert ibot.center[0].tolist() == pytest.approx([1.0, 0.5, 1.0])
    assert dino.center.abs().sum() == 0
