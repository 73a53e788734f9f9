"""Attention pooling of a bag of tile features into a few memory tokens (the visual side of both models).

For tiles x_1…x_N (D-dim, padded bags masked), M learned queries q_1…q_M (d-dim) attend over the projected
tiles h_i = LN(GELU(W x_i)):

    m_k = LN(q_k + MHA(q_k, H, H)),   then  m_k ← LN(m_k + FFN(m_k)).

Each memory token is a learned soft region of the bag (HistGen aggregates local regions into a global
summary; this is the light, order-free version). A single tile is a bag of one: every m_k is then a distinct
learned transform of that tile, so a tile model and a slide model share one code path.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BagToMemory(nn.Module):
    """Pool (B, N, D) bag features into (B, M, d) memory tokens.

    Args:
        feat_dim: tile feature size D.
        d_model: memory token size d.
        n_memory: number of memory tokens M.
        n_heads: attention heads.
        dropout: dropout on the projected tiles and inside attention.
    """

    def __init__(self, feat_dim: int, d_model: int, n_memory: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(feat_dim), nn.Linear(feat_dim, d_model), nn.GELU(), nn.Dropout(dropout)
        )
        self.tile_norm = nn.LayerNorm(d_model)
        self.queries = nn.Parameter(torch.randn(n_memory, d_model) * 0.02)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))
        self.norm2 = nn.LayerNorm(d_model)

    def project(self, feats: Tensor) -> Tensor:
        """(B, N, D) → (B, N, d) projected tiles (also the tokens cross-attended by the VQA model)."""
        return self.tile_norm(self.proj(feats))

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        """Memory tokens (B, M, d) from features (B, N, D) with ``mask`` (B, N), True = real tile."""
        tiles = self.project(feats)
        queries = self.queries.unsqueeze(0).expand(feats.shape[0], -1, -1)
        pooled, _ = self.attn(queries, tiles, tiles, key_padding_mask=~mask, need_weights=False)
        memory = self.norm1(queries + pooled)
        return self.norm2(memory + self.ffn(memory))
