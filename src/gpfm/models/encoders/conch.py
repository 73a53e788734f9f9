"""CONCH (Lu et al., Nat. Med. 2024) vision tower: ViT-B/16 trunk + attentional poolers (CoCa).

Outputs at a 224 px input (the trunk resamples its 448 px position embedding):

* ``pooled`` (the standard tile feature, 512-d): contrastive attentional pooler (1 query, 8 heads) → LayerNorm,
  without projection or normalisation — what ``encode_image(proj_contrast=False, normalize=False)`` returns;
* ``cls`` (GPFM's distillation target, 512-d): the above @ ``proj_contrast``, L2-normalised;
* ``patch``: trunk tokens after the final norm (14×14×768). The caption pooler's 256 queries are learned
  queries, not a spatial grid, and are never exposed.

Only ``visual.*`` keys are used; the text tower, ``logit_scale`` and the caption pooler are dropped by name.
Weights: gated on Hugging Face (CC-BY-NC-ND-4.0); CONCH's own normalisation is OpenAI-CLIP mean/std.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import CheckpointError
from gpfm.models.spec import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, EncoderSpec, Preprocess, TokenOutput, WeightSource
from gpfm.models.vit import ViTConfig, build_vit

CONCH_TRUNK = ViTConfig(embed_dim=768, depth=12, num_heads=12, patch_size=16, img_size=448, init_values=None,
                        dynamic_img_size=True)


class AttentionalPooler(nn.Module):
    """Learned queries cross-attending to (LayerNorm-ed) tokens, as in CoCa."""

    def __init__(self, d_model: int, context_dim: int, n_head: int, n_queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim, batch_first=True)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, context_dim) → (B, n_queries, d_model)."""
        keys = self.ln_k(tokens)
        q = self.ln_q(self.query).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return self.attn(q, keys, keys, need_weights=False)[0]


class ConchVisual(nn.Module):
    """The CONCH visual tower without the caption pooler."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = build_vit(CONCH_TRUNK)
        self.attn_pool_contrast = AttentionalPooler(512, 768, n_head=8, n_queries=1)
        self.ln_contrast = nn.LayerNorm(512)
        self.proj_contrast = nn.Parameter(torch.empty(512, 512))
        nn.init.normal_(self.proj_contrast, std=512**-0.5)


_DROPPED_PREFIXES = ("attn_pool_caption.", "ln_caption.")


def conch_to_visual(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Keep the ``visual.`` tower of a CONCH checkpoint, minus the caption pooler (dropped by name)."""
    for wrapper in ("state_dict", "model"):
        if wrapper in ckpt and isinstance(ckpt[wrapper], Mapping):
            ckpt = ckpt[wrapper]
    has_visual = any(k.startswith("visual.") for k in ckpt)
    out = {}
    for key, value in ckpt.items():
        if has_visual:
            if not key.startswith("visual."):
                continue  # text tower, logit_scale
            key = key.removeprefix("visual.")
        if key.startswith(_DROPPED_PREFIXES) or not isinstance(value, torch.Tensor):
            continue
        out[key] = value.float()
    if not out:
        raise CheckpointError("no CONCH visual-tower tensors found (expected keys starting with 'visual.')")
    return out, "conch-coca"


def _tokens(model: nn.Module, images: torch.Tensor) -> TokenOutput:
    tokens = model.trunk.forward_tokens(images)
    pooled = model.ln_contrast(model.attn_pool_contrast(tokens))[:, 0]
    contrastive = F.normalize(pooled @ model.proj_contrast, dim=-1)
    grid = (images.shape[-2] // 16, images.shape[-1] // 16)
    return TokenOutput(cls=contrastive, patch=tokens[:, 1:], grid=grid, pooled=pooled)


register_encoder(
    EncoderSpec(
        name="conch",
        architecture="CoCa vision tower: ViT-B/16 trunk (768 wide, 12 blocks, 448 px native) + attentional pooler",
        build=ConchVisual,
        convert_state_dict=conch_to_visual,
        forward_tokens=_tokens,
        embed_dim=512,
        token_dim=768,
        patch_size=16,
        num_prefix_tokens=1,
        pooling="contrastive",
        preprocess=Preprocess(input_size=448, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, interpolation="bicubic",
                              resize="shorter_then_center_crop", resize_to=448, norm_name="openai_clip"),
        weights=WeightSource(env_var="CONCH_WEIGHTS", hf_repo="MahmoodLab/conch", hf_filename="pytorch_model.bin",
                             license="CC-BY-NC-ND-4.0", gated=True),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="CONCH v1 vision tower (expert of GPFM): 512-d pooled feature; cls = L2-normalised projection",
        reference="Lu et al., Nature Medicine 2024",
    )
)
