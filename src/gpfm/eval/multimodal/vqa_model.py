"""VQA by fusion of question tokens with image features, answering by classification over a vocabulary.

For question token states Q (B, L, d_q) and a bag of tile features X (B, N, D):

* image tokens H = BagToMemory.project(X) (B, N, d), and M pooled memory tokens (B, M, d) from the same
  module; the question attends to both ([H; M], so a single tile and a large slide bag share one path);
* fused = TransformerDecoder(tgt = W_q Q, memory = [H; M]) — per layer: self-attention over the question,
  cross-attention question → image, feed-forward (no causal mask);
* q = masked mean of fused over question tokens, v = mean of M;
  logits = MLP([q; v; q ⊙ v]) over the training answer vocabulary (A answers).

Loss: cross-entropy on the answer index. Multiple-choice questions are answered by the arg-max restricted
to the choices that are in the vocabulary (the full vocabulary when none is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gpfm.eval.multimodal.bag_pooling import BagToMemory


@dataclass
class VqaModelConfig:
    """Architecture of :class:`VqaFusionModel`."""

    feat_dim: int
    question_dim: int
    n_answers: int
    d_model: int = 256
    n_memory: int = 4
    n_heads: int = 4
    n_layers: int = 2
    dropout: float = 0.1


class VqaFusionModel(nn.Module):
    """Question × image fusion classifier (see the module docstring).

    Args:
        cfg: sizes.
        question_encoder: module mapping raw questions to (token states (B, L, question_dim), mask (B, L)).
    """

    def __init__(self, cfg: VqaModelConfig, question_encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.question_encoder = question_encoder
        self.image = BagToMemory(cfg.feat_dim, cfg.d_model, cfg.n_memory, cfg.n_heads, cfg.dropout)
        self.q_proj = nn.Sequential(nn.Linear(cfg.question_dim, cfg.d_model), nn.LayerNorm(cfg.d_model))
        layer = nn.TransformerDecoderLayer(
            cfg.d_model,
            cfg.n_heads,
            2 * cfg.d_model,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.fusion = nn.TransformerDecoder(layer, cfg.n_layers, norm=nn.LayerNorm(cfg.d_model))
        self.classifier = nn.Sequential(
            nn.Linear(3 * cfg.d_model, 2 * cfg.d_model),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * cfg.d_model, cfg.n_answers),
        )

    def forward(self, feats: Tensor, mask: Tensor, questions: Sequence[str]) -> Tensor:
        """Answer logits (B, A) for bags (B, N, D) with tile mask (B, N) and raw questions."""
        q_states, q_mask = self.question_encoder(questions)
        q_states, q_mask = q_states.to(feats.device), q_mask.to(feats.device)
        tiles = self.image.project(feats)
        memory = self.image(feats, mask)
        keys = torch.cat([tiles, memory], dim=1)
        key_mask = torch.cat(
            [mask, torch.ones(memory.shape[:2], dtype=torch.bool, device=feats.device)], dim=1
        )
        fused = self.fusion(
            self.q_proj(q_states), keys, tgt_key_padding_mask=~q_mask, memory_key_padding_mask=~key_mask
        )
        weights = q_mask.unsqueeze(-1).float()
        q = (fused * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        v = memory.mean(1)
        return self.classifier(torch.cat([q, v, q * v], dim=-1))


def restrict_to_choices(logits: Tensor, allowed: Sequence[Sequence[int]]) -> Tensor:
    """Arg-max per row over ``allowed[i]`` answer indices (all answers where ``allowed[i]`` is empty)."""
    preds = logits.argmax(dim=-1)
    for i, idx in enumerate(allowed):
        if idx:
            sub = torch.as_tensor(list(idx), device=logits.device)
            preds[i] = sub[logits[i, sub].argmax()]
    return preds
