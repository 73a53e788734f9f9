"""HistGen-style report generator: bag → memory tokens → small transformer decoder, with greedy/beam decoding.

Training is teacher forcing: for a report w_0 = <bos>, w_1 … w_T, w_{T+1} = <eos>, the loss is
``−(1/T') Σ_t log p(w_{t+1} | w_{≤t}, memory)`` over non-padding targets (cross-entropy, mean over tokens of
the batch). Decoding never emits ``<pad>``, ``<bos>`` or ``<unk>``, emits ``<eos>`` only after ``min_len``
words, and stops at ``<eos>`` or ``max_len`` tokens (then the output is marked truncated).

Beam search keeps ``beam_size`` live hypotheses per sample; a hypothesis that ends in ``<eos>`` is moved to
the finished set with score ``log p / lp(len)``, ``lp(L) = ((5 + L) / 6)^α`` (Wu et al. 2016, α =
``length_penalty``). A sample stops when it has ``beam_size`` finished hypotheses or reaches ``max_len``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gpfm.eval.multimodal.bag_pooling import BagToMemory


@dataclass
class ReportModelConfig:
    """Architecture of :class:`ReportGenerator` (sizes pinned by the protocol)."""

    feat_dim: int
    vocab_size: int
    d_model: int = 256
    n_memory: int = 8
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 512
    dropout: float = 0.1
    max_len: int = 64
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3


@dataclass
class Generation:
    """One decoded sequence: word ids (no BOS/EOS), whether it ended with EOS, its log-probability."""

    ids: list[int]
    ended: bool
    logprob: float


class ReportGenerator(nn.Module):
    """Bag-of-tiles → text decoder (see the module docstring)."""

    def __init__(self, cfg: ReportModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.memory = BagToMemory(cfg.feat_dim, cfg.d_model, cfg.n_memory, cfg.n_heads, cfg.dropout)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * 0.02)
        layer = nn.TransformerDecoderLayer(
            cfg.d_model,
            cfg.n_heads,
            cfg.ff_dim,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, cfg.n_layers, norm=nn.LayerNorm(cfg.d_model))
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def encode(self, feats: Tensor, mask: Tensor) -> Tensor:
        """Memory tokens (B, M, d) of a padded batch of bags."""
        return self.memory(feats, mask)

    def decode_step(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Logits (B, T, V) for every prefix position of ``tokens`` (B, T) given ``memory``."""
        t = tokens.shape[1]
        if t > self.cfg.max_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_len {self.cfg.max_len}")
        x = self.embed(tokens) + self.pos[:t]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tokens.device), diagonal=1)
        out = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=tokens == self.cfg.pad_id)
        return self.head(out)

    def forward(self, feats: Tensor, mask: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forcing logits (B, T, V) for input tokens (B, T) (BOS-prefixed, padded)."""
        return self.decode_step(tokens, self.encode(feats, mask))

    def loss(self, feats: Tensor, mask: Tensor, tokens: Tensor) -> Tensor:
        """Mean next-token cross-entropy on non-pad targets of ``tokens`` (B, T) = <bos> … <eos> <pad>…."""
        logits = self(feats, mask, tokens[:, :-1])
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=self.cfg.pad_id
        )

    def _mask_logprobs(self, logits: Tensor, step: int, min_len: int) -> Tensor:
        logits = logits.float().clone()
        logits[:, [self.cfg.pad_id, self.cfg.bos_id, self.cfg.unk_id]] = float("-inf")
        if step < min_len:
            logits[:, self.cfg.eos_id] = float("-inf")
        return torch.log_softmax(logits, dim=-1)

    @torch.no_grad()
    def generate(
        self,
        feats: Tensor,
        mask: Tensor,
        *,
        max_len: int | None = None,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        min_len: int = 1,
    ) -> list[Generation]:
        """Decode one text per bag (greedy when ``beam_size`` is 1)."""
        max_len = min(max_len or self.cfg.max_len, self.cfg.max_len)
        memory = self.encode(feats, mask)
        if beam_size <= 1:
            return self._greedy(memory, max_len, min_len)
        return self._beam(memory, max_len, beam_size, length_penalty, min_len)

    def _greedy(self, memory: Tensor, max_len: int, min_len: int) -> list[Generation]:
        b = memory.shape[0]
        tokens = torch.full((b, 1), self.cfg.bos_id, dtype=torch.long, device=memory.device)
        logprob = torch.zeros(b, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for step in range(max_len - 1):
            logp = self._mask_logprobs(self.decode_step(tokens, memory)[:, -1], step, min_len)
            best, nxt = logp.max(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, self.cfg.pad_id), nxt)
            logprob += torch.where(done, torch.zeros_like(best), best)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == self.cfg.eos_id
            if bool(done.all()):
                break
        out = []
        for i in range(b):
            seq = tokens[i, 1:].tolist()
            ended = self.cfg.eos_id in seq
            words = seq[: seq.index(self.cfg.eos_id)] if ended else [t for t in seq if t != self.cfg.pad_id]
            out.append(Generation(words, ended, float(logprob[i])))
        return out

    def _beam(self, memory: Tensor, max_len: int, k: int, alpha: float, min_len: int) -> list[Generation]:
        b, device = memory.shape[0], memory.device
        mem = memory.repeat_interleave(k, dim=0)  # (B*K, M, d)
        tokens = torch.full((b * k, 1), self.cfg.bos_id, dtype=torch.long, device=device)
        scores = torch.full((b, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # identical start beams: only the first is live
        finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(b)]
        active = torch.ones(b, dtype=torch.bool, device=device)

        def penalty(length: int) -> float:
            return ((5.0 + length) / 6.0) ** alpha

        for step in range(max_len - 1):
            logp = self._mask_logprobs(self.decode_step(tokens, mem)[:, -1], step, min_len)  # (B*K, V)
            vocab = logp.shape[-1]
            cand = (scores.reshape(-1, 1) + logp).reshape(b, k * vocab)
            top_scores, top_idx = cand.topk(2 * k, dim=-1)
            new_tokens = torch.full(
                (b, k, tokens.shape[1] + 1), self.cfg.pad_id, dtype=torch.long, device=device
            )
            new_scores = torch.full((b, k), float("-inf"), device=device)
            for i in range(b):
                if not bool(active[i]):
                    continue
                filled = 0
                for s, idx in zip(top_scores[i].tolist(), top_idx[i].tolist(), strict=True):
                    if s == float("-inf"):
                        break
                    beam, word = divmod(idx, vocab)
                    prefix = tokens[i * k + beam]
                    if word == self.cfg.eos_id:
                        words = prefix[1:].tolist()
                        finished[i].append((s / penalty(len(words) + 1), s, words))
                        continue
                    new_tokens[i, filled, :-1] = prefix
                    new_tokens[i, filled, -1] = word
                    new_scores[i, filled] = s
                    filled += 1
                    if filled == k:
                        break
                if len(finished[i]) >= k:
                    active[i] = False
            tokens, scores = new_tokens.reshape(b * k, -1), new_scores
            if not bool(active.any()):
                break
        out = []
        for i in range(b):
            if finished[i]:
                _, raw, words = max(finished[i], key=lambda f: f[0])
                out.append(Generation(words, True, raw))
            else:  # ran out of length: best live beam, marked truncated
                j = int(scores[i].argmax())
                out.append(Generation(tokens[i * k + j, 1:].tolist(), False, float(scores[i, j])))
        return out
