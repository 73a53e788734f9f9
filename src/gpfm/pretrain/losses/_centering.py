"""Teacher-target maths shared by the DINO and iBOT losses: softmax centering, Sinkhorn-Knopp, center EMA.

Every reduction across processes goes through :func:`all_reduce_sum`, which is a no-op unless
``torch.distributed`` is initialised (then it is a synchronous SUM all-reduce; the spec allows an asynchronous
one that applies one step late, we choose the exact synchronous form).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed_world_size() -> int:
    """World size when ``torch.distributed`` is initialised, else 1."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place SUM (or MAX) all-reduce when distributed is initialised; returns ``tensor``."""
    if distributed_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def softmax_centered(teacher_logits: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """p_T = softmax((z_T − c) / τ_T) over the last axis, computed in fp32."""
    return torch.softmax((teacher_logits.float() - center.float()) / teacher_temp, dim=-1)


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp teacher targets (SwAV / DINOv2 "sinkhorn_knopp" centering), fp32, all-reduced.

    Q = exp(z_T / τ_T)ᵀ (K × B_total, where B_total sums the rows of every process) is scaled to total mass 1,
    then ``n_iterations`` times: rows (prototypes) are scaled to mass 1/K each (row sums all-reduced), then
    columns (samples) to mass 1/B_total each. The result is multiplied by B_total so that every returned row
    (sample) is a probability vector. The global maximum logit (all-reduced MAX) is subtracted before the
    exponential for numerical safety; this cancels exactly in the first normalisation.

    Args:
        teacher_logits: (B, K) teacher logits on this process.
        teacher_temp: τ_T.
        n_iterations: Sinkhorn iterations (3 in DINOv2).

    Returns:
        (B, K) fp32 probabilities, each row summing to 1; (0, K) when no process has a row (e.g. a batch with no
        masked token for iBOT): every process takes the same branch, so the collectives stay matched.
    """
    logits = teacher_logits.float() / teacher_temp
    local_max = logits.max().detach().clone() if logits.numel() else torch.tensor(float("-inf"), device=logits.device)
    global_max = all_reduce_(local_max, op="max")
    n_rows = all_reduce_(torch.tensor(float(logits.shape[0]), device=logits.device))
    if float(n_rows) == 0:
        return torch.zeros_like(logits)
    q = torch.exp(logits - global_max).t()  # (K, B)
    k = q.shape[0]
    q /= all_reduce_(q.sum())
    for _ in range(n_iterations):
        q /= all_reduce_(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= n_rows
    q *= n_rows
    return q.t()


@torch.no_grad()
def update_center_(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> None:
    """C ← m·c + (1 − m)·mean_rows(z_T), the mean taken over the rows of all processes (in place)."""
    flat = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
    total = all_reduce_(flat.sum(dim=0, keepdim=True))
    count = all_reduce_(torch.tensor(float(flat.shape[0]), device=flat.device))
    center.mul_(momentum).add_(total / count * (1.0 - momentum))
