"""KoLeo regulariser: spreads a batch of embeddings by penalising small nearest-neighbour distances."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-8
PAIRWISE_EPS = 1e-8
LOG_EPS = 1e-8


class KoLeoLoss(nn.Module):
    """Kozachenko–Leonenko entropy estimator loss (Sablayrolles et al. 2019).

    For a batch x ∈ R^{B×D} (the pre-head, post-norm student CLS of one global-crop chunk):
        x̂_i = x_i / max(‖x_i‖₂, 1e-8)
        n(i) = argmax_{j ≠ i} x̂_i·x̂_j            (diagonal excluded by setting it to −1)
        d_i = ‖x̂_i − x̂_n(i) + 1e-8·𝟙‖₂   (``nn.PairwiseDistance(p=2, eps=1e-8)``: eps inside the norm)
        L = −(1/B) Σ_i log(d_i + 1e-8)
    Un-weighted (the 0.1 weight and the sum over the two global chunks belong to the training loop).

    Precision: autocast is always disabled. With ``upcast_fp32=True`` [I, default] the input is upcast to
    fp32, so both 1e-8 epsilons are representable and an exact duplicate pair gives d_i = 1e-8·√D, a
    per-sample term −log(1e-8·√D + 1e-8) (≈ 14.92 for D = 1024): large but finite. With ``upcast_fp32=False``
    the loss is evaluated in the input's dtype, as upstream does with its fp16 CLS tokens: there the
    epsilons round to zero and an exact duplicate gives an infinite term. Needs B ≥ 2.

    Args:
        upcast_fp32: compute in fp32 whatever the input dtype.
    """

    def __init__(self, upcast_fp32: bool = True) -> None:
        super().__init__()
        self.upcast_fp32 = upcast_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scalar KoLeo loss of (B, D) embeddings."""
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"KoLeoLoss needs a (B, D) batch with B >= 2, got shape {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float() if self.upcast_fp32 else x, p=2, dim=-1, eps=NORM_EPS)
            with torch.no_grad():
                dots = x @ x.t()
                dots.fill_diagonal_(-1.0)
                neighbour = dots.argmax(dim=1)
            dist = F.pairwise_distance(x, x[neighbour], p=2.0, eps=PAIRWISE_EPS)
            return -torch.log(dist + LOG_EPS).mean()

    @staticmethod
    @torch.no_grad()
    def nearest_neighbour_distances(x: torch.Tensor) -> torch.Tensor:
        """The (B,) d_i of the loss (fp32), for the "min NN distance / near-duplicate count" health log."""
        x = F.normalize(x.detach().float(), p=2, dim=-1, eps=NORM_EPS)
        dots = x @ x.t()
        dots.fill_diagonal_(-1.0)
        return F.pairwise_distance(x, x[dots.argmax(dim=1)], p=2.0, eps=PAIRWISE_EPS)
