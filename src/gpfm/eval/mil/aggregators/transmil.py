"""TransMIL (Shao et al., NeurIPS 2021): two Nyström-attention Transformer layers, a PPEG, a class token.

Architecture (paper defaults, width 512):

1. ``h_i = ReLU(W_1 x_i)`` (D → 512); the N tokens are padded to a square ``H × W`` (``H = W = ⌈√N⌉``) by
   repeating the first tokens, and a learned class token is prepended;
2. TransLayer: ``z ← z + NystromAttention(LayerNorm(z))`` (8 heads × 64, 256 landmarks, 6 Moore–Penrose
   iterations, depthwise residual convolution with kernel 33 over the sequence on the values, dropout 0.1);
3. PPEG: the tokens as an ``H × W`` map, ``F + DWConv7(F) + DWConv5(F) + DWConv3(F)``, class token unchanged;
4. a second TransLayer, LayerNorm, and a linear head on the class token.

**Nyström attention** (Xiong et al., AAAI 2021) approximates ``softmax(QKᵀ/√d) V`` with ``m`` landmarks
(segment means of Q and K after zero-padding the sequence at the front to a multiple of ``m``):
``softmax(Q K̃ᵀ) · pinv(softmax(Q̃ K̃ᵀ)) · softmax(Q̃ Kᵀ) V``, the pseudo-inverse by the iteration
``Z ← ¼ Z (13I − AZ(15I − AZ(7I − AZ)))`` from ``Z₀ = Aᵀ / (max col-sum · max row-sum)``. For sequences
no longer than ``m`` every token is its own landmark and the formula is exact softmax attention, which is
computed directly (the reference implementation pads such bags to ``m`` tokens at a large cost on CPU).

The ``attention`` output is the class token's (Nyström-approximated) attention over the N original
instances in the last layer, averaged over heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpfm.eval.mil.registry import AGGREGATORS, MILOutput


def _pinv(a: Tensor, iterations: int) -> Tensor:
    """Iterative Moore–Penrose pseudo-inverse of a batch of square matrices."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    z = a.transpose(-1, -2) / (a.abs().sum(-1).max() * a.abs().sum(-2).max())
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromAttention(nn.Module):
    """Multi-head Nyström self-attention over a (B, n, dim) sequence (see the module docstring)."""

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        landmarks: int = 256,
        pinv_iterations: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.heads, self.dim_head, self.landmarks = heads, dim_head, landmarks
        self.pinv_iterations = pinv_iterations
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))
        self.res_conv = nn.Conv2d(
            heads, heads, (residual_kernel, 1), padding=(residual_kernel // 2, 0), groups=heads, bias=False
        )
        self.last_cls_attention: Tensor | None = None

    def forward(self, x: Tensor, cls_index: int | None = None) -> Tensor:
        """(B, n, dim) → (B, n, dim); stores the class token's attention when ``cls_index`` is given."""
        b, n, _ = x.shape
        m = self.landmarks
        if n <= m:
            return self._exact(x, cls_index)
        pad = (m - n % m) % m
        x = F.pad(x, (0, 0, pad, 0))  # zero tokens at the front, as in the reference formulation
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, -1, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        q = q * self.scale
        seg = (n + pad) // m
        q_land = q.reshape(b, self.heads, m, seg, self.dim_head).mean(3)
        k_land = k.reshape(b, self.heads, m, seg, self.dim_head).mean(3)
        attn1 = torch.softmax(q @ k_land.transpose(-1, -2), dim=-1)
        attn2_inv = _pinv(torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1), self.pinv_iterations)
        attn3 = torch.softmax(q_land @ k.transpose(-1, -2), dim=-1)
        left = attn1 @ attn2_inv
        out = left @ (attn3 @ v) + self.res_conv(v)
        if cls_index is not None:
            with torch.no_grad():
                row = left[:, :, pad + cls_index : pad + cls_index + 1]  # (B, heads, 1, m)
                self.last_cls_attention = (row @ attn3).squeeze(-2)[..., pad:]  # (B, heads, n)
        out = out.transpose(1, 2).reshape(b, -1, self.heads * self.dim_head)
        return self.to_out(out)[:, -n:]

    def _exact(self, x: Tensor, cls_index: int | None) -> Tensor:
        """Softmax attention, which Nyström with one landmark per token reduces to (cheaper for n ≤ m)."""
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        attn = torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1)
        if cls_index is not None:
            self.last_cls_attention = attn[:, :, cls_index].detach()
        out = (attn @ v + self.res_conv(v)).transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.to_out(out)


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise 7/5/3 convolutions on the token map plus identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, x: Tensor, side: int) -> Tensor:
        """(B, 1 + side², dim) → same shape."""
        cls, feat = x[:, :1], x[:, 1:]
        grid = feat.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(nn.Module):
    """TransMIL aggregator (see the module docstring).

    Args:
        in_dim: instance feature size D.
        n_outputs: bag outputs K.
        dim: token width.
        heads: attention heads (``dim_head = dim // heads``).
        landmarks: Nyström landmarks (the paper uses dim // 2).
        dropout: attention output dropout.
    """

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        dim: int = 512,
        heads: int = 8,
        landmarks: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.fc_in = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm1, self.norm2, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = NystromAttention(dim, heads, dim // heads, landmarks, dropout=dropout)
        self.attn2 = NystromAttention(dim, heads, dim // heads, landmarks, dropout=dropout)
        self.ppeg = PPEG(dim)
        self.head = nn.Linear(dim, n_outputs)

    def forward(self, x: Tensor) -> MILOutput:
        """Bag (N, D) → logits (K,) and last-layer class-token attention (N,)."""
        if x.dim() == 2:
            x = x[None]
        n = x.shape[1]
        h = self.fc_in(x)
        side = math.ceil(math.sqrt(n))
        extra = side * side - n
        if extra:  # repeat the first tokens (cyclically for tiny bags) to fill the square
            h = torch.cat([h, h[:, torch.arange(extra, device=h.device) % n]], dim=1)
        z = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        z = z + self.attn1(self.norm1(z))
        z = self.ppeg(z, side)
        z = z + self.attn2(self.norm2(z), cls_index=0)
        logits = self.head(self.norm_out(z[:, 0]))[0]
        attention = self.attn2.last_cls_attention
        attention = attention[0].mean(0)[1 : n + 1] if attention is not None else None
        return MILOutput(logits, attention)


@AGGREGATORS.register("transmil")
def transmil(in_dim: int, n_outputs: int, **kwargs) -> TransMIL:
    """TransMIL with the paper's defaults."""
    return TransMIL(in_dim, n_outputs, **kwargs)
