"""Attention-based MIL (Ilse et al., ICML 2018), in the non-gated and gated forms.

For instance features ``x_i`` (N, D):

* trunk ``h_i = Dropout(ReLU(W_1 x_i))`` with ``W_1``: D → ``hidden`` (512);
* non-gated attention ``a_i = w^T tanh(V h_i)``, gated ``a_i = w^T (tanh(V h_i) ⊙ σ(U h_i))``, with V, U:
  ``hidden`` → ``attn_dim`` (128), w: ``attn_dim`` → 1;
* ``α = softmax_i(a)``; bag embedding ``z = Σ_i α_i h_i``; logits ``W_2 z`` (``hidden`` → K).

``wsi.abmil.gpfm`` [F] uses the non-gated form with hidden 512, attention 128, dropout 0.25 (GPFM
``mil_models/att_mil.py``, as read from the GPFM repository). Dropout inside the gated attention
branches is off by default (``attn_dropout`` = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gpfm.eval.mil.registry import AGGREGATORS, MILOutput


class ABMIL(nn.Module):
    """ABMIL aggregator (see the module docstring).

    Args:
        in_dim: instance feature size D.
        n_outputs: bag outputs K.
        hidden: trunk width.
        attn_dim: attention hidden width.
        dropout: dropout after the trunk ReLU.
        gated: use gated attention.
        attn_dropout: dropout inside the attention branches.
    """

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        hidden: int = 512,
        attn_dim: int = 128,
        dropout: float = 0.25,
        gated: bool = False,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.gated = gated
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Sequential(nn.Linear(hidden, attn_dim), nn.Tanh(), nn.Dropout(attn_dropout))
        self.attn_u = (
            nn.Sequential(nn.Linear(hidden, attn_dim), nn.Sigmoid(), nn.Dropout(attn_dropout))
            if gated
            else None
        )
        self.attn_w = nn.Linear(attn_dim, 1)
        self.head = nn.Linear(hidden, n_outputs)

    def attention_logits(self, h: Tensor) -> Tensor:
        """Unnormalised attention ``a`` (N,) for trunk features ``h`` (N, hidden)."""
        v = self.attn_v(h)
        if self.attn_u is not None:
            v = v * self.attn_u(h)
        return self.attn_w(v).squeeze(-1)

    def forward(self, x: Tensor) -> MILOutput:
        """Bag (N, D) → logits (K,) and softmax attention (N,)."""
        if x.dim() == 3 and x.shape[0] == 1:
            x = x[0]
        h = self.trunk(x)
        attn = torch.softmax(self.attention_logits(h), dim=0)
        return MILOutput(self.head(attn @ h), attn)


@AGGREGATORS.register("abmil")
def abmil(in_dim: int, n_outputs: int, **kwargs) -> ABMIL:
    """Non-gated ABMIL (the ``wsi.abmil.gpfm`` model)."""
    return ABMIL(in_dim, n_outputs, gated=False, **kwargs)


@AGGREGATORS.register("abmil_gated")
def abmil_gated(in_dim: int, n_outputs: int, **kwargs) -> ABMIL:
    """Gated ABMIL."""
    return ABMIL(in_dim, n_outputs, gated=True, **kwargs)
