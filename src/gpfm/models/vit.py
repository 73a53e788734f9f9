"""DINOv2-style Vision Transformers built from timm's layers (fused SDPA attention, LayerScale, Mlp/SwiGLU).

Only what timm lacks is written here: a learned ``mask_token`` inserted at masked patch positions (iBOT), and
token outputs split into CLS / registers / patches. Key names are timm's, so a GPFM "format B" state dict
loads strictly into :func:`build_vit` with ``mask_token=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from timm.layers import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from gpfm.models.spec import TokenOutput


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ViT encoder.

    Attributes:
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        patch_size: patch side in px.
        img_size: input side the position embedding is learned for.
        mlp_ratio: FFN hidden / width.
        ffn: ``mlp`` (GELU MLP) or ``swiglu``.
        init_values: LayerScale init (None: no LayerScale).
        reg_tokens: number of register tokens.
        qkv_bias: bias in the qkv projection.
        norm_eps: LayerNorm epsilon.
        no_embed_class: the position embedding covers patch tokens only (UNI2-h / H-optimus layout).
        dynamic_img_size: resample the position embedding for other input sizes.
        drop_path_rate: stochastic depth (0 at inference).
        drop_path_uniform: same drop rate in every block (GPFM/DINOv2 ViT-L) instead of linearly increasing.
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 14
    img_size: int = 224
    mlp_ratio: float = 4.0
    ffn: str = "mlp"
    init_values: float | None = 1e-5
    reg_tokens: int = 0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    no_embed_class: bool = False
    dynamic_img_size: bool = False
    drop_path_rate: float = 0.0
    drop_path_uniform: bool = True

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus registers."""
        return 1 + self.reg_tokens

    @property
    def grid(self) -> int:
        """Patch grid side at ``img_size``."""
        return self.img_size // self.patch_size


# The GPFM backbone: ViT-L/14, MLP FFN, LayerScale 1e-5, no registers.
GPFM_VITL14 = ViTConfig()
VIT_PRESETS: dict[str, ViTConfig] = {
    "vit_tiny": ViTConfig(embed_dim=192, depth=12, num_heads=3),
    "vit_small": ViTConfig(embed_dim=384, depth=12, num_heads=6),
    "vit_base": ViTConfig(embed_dim=768, depth=12, num_heads=12),
    "vit_large": GPFM_VITL14,
}


class ViT(VisionTransformer):
    """timm ViT plus an optional iBOT ``mask_token`` and token-level outputs."""

    def __init__(self, cfg: ViTConfig, mask_token: bool = False) -> None:
        norm_layer = partial(nn.LayerNorm, eps=cfg.norm_eps)
        kwargs: dict = {}
        if cfg.ffn == "swiglu":
            kwargs.update(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
        elif cfg.ffn != "mlp":
            raise ValueError(f"unknown ffn {cfg.ffn!r}; use 'mlp' or 'swiglu'")
        super().__init__(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            init_values=cfg.init_values,
            reg_tokens=cfg.reg_tokens,
            no_embed_class=cfg.no_embed_class,
            num_classes=0,
            global_pool="token",
            norm_layer=norm_layer,
            dynamic_img_size=cfg.dynamic_img_size,
            drop_path_rate=cfg.drop_path_rate,
            **kwargs,
        )
        self.cfg = cfg
        if cfg.drop_path_rate > 0 and cfg.drop_path_uniform:
            from timm.layers import DropPath

            for blk in self.blocks:
                blk.drop_path1 = DropPath(cfg.drop_path_rate)
                blk.drop_path2 = DropPath(cfg.drop_path_rate)
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.embed_dim)) if mask_token else None

    def forward_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """All tokens after the final norm, (B, prefix + N, D).

        Args:
            x: (B, 3, H, W) images.
            masks: optional (B, N) bool, True where the patch embedding is replaced by ``mask_token``.
        """
        x = self.patch_embed(x)
        if masks is not None:
            if self.mask_token is None:
                raise ValueError("this ViT was built without a mask_token; build it with mask_token=True")
            b, n = masks.shape
            x = x.reshape(b, n, -1) if x.ndim == 3 else x.reshape(b, n, -1)
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
            if self.dynamic_img_size:
                side = int(n**0.5)
                x = x.reshape(b, side, side, -1)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        x = self.blocks(x)
        return self.norm(x)

    def split_tokens(self, tokens: torch.Tensor, grid: tuple[int, int]) -> TokenOutput:
        """Split final tokens into CLS and patches; pooled = CLS."""
        cls = tokens[:, 0]
        patch = tokens[:, self.num_prefix_tokens :]
        return TokenOutput(cls=cls, patch=patch, grid=grid, pooled=cls)


def fit_pos_embed(sd: dict[str, torch.Tensor], cfg: ViTConfig, antialias: bool) -> dict[str, torch.Tensor]:
    """Resample a checkpoint's position embedding to ``cfg``'s grid, the way the model's reference code does.

    Checkpoints trained at 518 px (DINOv2 family) carry a 37×37 grid; their reference implementations resample
    it to the input grid at run time: timm bicubic WITH antialiasing, Hugging Face Dinov2 bicubic without. Done
    once at load, with the same filter, the result is identical at gpfm's fixed input size.
    """
    pos = sd.get("pos_embed")
    prefix = 0 if cfg.no_embed_class else 1
    if pos is None or pos.shape[1] == cfg.grid**2 + prefix:
        return sd
    from timm.layers import resample_abs_pos_embed

    out = dict(sd)
    out["pos_embed"] = resample_abs_pos_embed(pos, [cfg.grid, cfg.grid], num_prefix_tokens=prefix,
                                              antialias=antialias)
    return out


def build_vit(cfg: ViTConfig, mask_token: bool = False) -> ViT:
    """Build a randomly initialised :class:`ViT` (no weights are loaded here)."""
    return ViT(cfg, mask_token=mask_token)


def vit_cls_tokens(model: nn.Module, images: torch.Tensor) -> TokenOutput:
    """``forward_tokens`` for a :class:`ViT` whose prescribed embedding is the final-norm CLS."""
    grid = (images.shape[-2] // model.cfg.patch_size, images.shape[-1] // model.cfg.patch_size)
    return model.split_tokens(model.forward_tokens(images), grid)


def vit_cls_mean_tokens(model: nn.Module, images: torch.Tensor) -> TokenOutput:
    """``forward_tokens`` for ViTs whose prescribed embedding is CLS ⊕ mean(patch tokens) (Virchow style)."""
    out = vit_cls_tokens(model, images)
    return out._replace(pooled=torch.cat([out.cls, out.patch.mean(dim=1)], dim=-1))
