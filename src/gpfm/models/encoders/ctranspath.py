"""CTransPath (Wang et al., Med. Image Anal. 2022) and CHIEF's tile encoder (Wang et al., Nature 2024).

Both are a Swin-T (timm ``swin_tiny_patch4_window7_224``) whose patch embedding is replaced by a convolutional
stem; the tile feature is the average-pooled final-norm token map, 768-d. CHIEF's tile encoder is the same
network with its own weights (``CHIEF_CTransPath.pth``).

Matched from the authors' source (Xiyue-Wang/TransPath ``ctran.py`` and ``get_features_CTransPath.py``; the
reference is a fork of timm 0.5.4, not a pip package):

* stem: Conv3×3/2 (3→12, no bias) → BatchNorm → ReLU → Conv3×3/2 (12→24, no bias) → BatchNorm → ReLU →
  Conv1×1 (24→96, bias), then the Swin patch-norm LayerNorm(96);
* ``model.head = nn.Identity()`` and a strict load of ``torch.load(...)['model']``;
* transform: Resize(224) + ImageNet mean/std.

The released state dict is in timm-0.5.4 layout: patch merging at the END of stages 0-2
(``layers.{i}.downsample``) and persistent ``relative_position_index``/``attn_mask`` buffers. Current timm merges
at the START of stages 1-3 and computes those buffers; :func:`ctranspath_to_timm` renames and drops exactly these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import CheckpointError, unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, TokenOutput, WeightSource


class ConvStem(nn.Module):
    """CTransPath's convolutional patch embedding (4× downsampling), output NHWC as timm's Swin expects."""

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 4,
                 in_chans: int = 3, embed_dim: int = 96, norm_layer: type[nn.Module] | None = None, **_: Any) -> None:
        super().__init__()
        img_size = img_size[0] if isinstance(img_size, tuple | list) else img_size
        patch_size = patch_size[0] if isinstance(patch_size, tuple | list) else patch_size
        if patch_size != 4 or embed_dim % 8:
            raise ValueError("ConvStem needs patch_size 4 and embed_dim divisible by 8")
        layers: list[nn.Module] = []
        c_in, c_out = in_chans, embed_dim // 8
        for _stage in range(2):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in, c_out = c_out, c_out * 2
        layers.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, H/4, W/4, C)."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def build_ctranspath() -> nn.Module:
    """The Swin-T of timm with the convolutional stem, headless (random weights)."""
    import timm

    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, embed_layer=ConvStem, num_classes=0)


def ctranspath_tokens(model: nn.Module, images: torch.Tensor) -> TokenOutput:
    """Final-norm token map (7×7×768 at 224 px) and its average (the 768-d tile feature)."""
    fmap = model.forward_features(images)  # (B, h, w, C), after the final LayerNorm
    b, h, w, c = fmap.shape
    tokens = fmap.reshape(b, h * w, c)
    pooled = tokens.mean(dim=1)
    return TokenOutput(cls=pooled, patch=tokens, grid=(h, w), pooled=pooled)


_DROP = ("relative_position_index", "attn_mask")


def ctranspath_to_timm(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The released timm-0.5.4 layout → current timm (see the module docstring); a timm-layout dict passes."""
    sd, _ = unwrap_timm_state_dict(ckpt)
    legacy = "layers.0.downsample.reduction.weight" in sd
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith(_DROP) or key.startswith("head."):
            continue
        if legacy:
            key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key)
        out[key] = value
    if "patch_embed.proj.0.weight" not in out:
        raise CheckpointError("not a CTransPath checkpoint: no convolutional stem (patch_embed.proj.0.weight); "
                              "pass ctranspath.pth or CHIEF_CTransPath.pth")
    return out, "ctranspath-timm0.5" if legacy else "timm"


for _name, _env, _file, _desc, _ref in (
    ("ctranspath", "CTRANSPATH_WEIGHTS", "ctranspath.pth", "CTransPath (a GPFM baseline): 768-d pooled Swin-T",
     "Wang et al., Medical Image Analysis 2022 (Xiyue-Wang/TransPath)"),
    ("chief", "CHIEF_WEIGHTS", "CHIEF_CTransPath.pth",
     "CHIEF tile encoder (a GPFM baseline; CTransPath architecture, CHIEF weights): 768-d",
     "Wang et al., Nature 2024 (hms-dbmi/CHIEF)"),
):
    register_encoder(
        EncoderSpec(
            name=_name,
            architecture="Swin-T (96 wide, depths 2-2-6-2, window 7) with a convolutional stem, average pool, 224 px",
            build=build_ctranspath,
            convert_state_dict=ctranspath_to_timm,
            forward_tokens=ctranspath_tokens,
            embed_dim=768,
            token_dim=768,
            patch_size=32,  # output stride of the final token map
            num_prefix_tokens=0,
            pooling="pooled",
            preprocess=Preprocess(input_size=224, interpolation="bilinear"),
            weights=WeightSource(env_var=_env, url=None,
                                 license="GPL-3.0 (code); weights released by the authors for research use",
                                 notes=f"download {_file} from the authors' release page (Google Drive link in "
                                       "their README) and pass it with --weights"),
            tile_recipe="trident-112um",
            tile_fov_um=112.0,
            memory_format="channels_last",  # the Swin stages run NHWC after the convolutional stem
            memory_format_basis="benchmarks/memory_format.py, 64 real CMU tiles, AVX2 2 threads, fp32: 1.02-1.16× "
                                "over two runs (7.05 → 8.15 tiles/s)",
            description=_desc,
            reference=_ref,
        )
    )
