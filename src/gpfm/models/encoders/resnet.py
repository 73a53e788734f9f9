"""ResNet-50 truncated after layer3 with global average pooling (1024-d): the CLAM-lineage baseline.

ImageNet weights are torchvision's (``resnet50-19c8e357.pth``, BSD-3); ``layer4`` and ``fc`` are dropped by
name before the strict load.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet50

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, TokenOutput, WeightSource

TORCHVISION_FILE = "resnet50-19c8e357.pth"


class ResNet50Trunc(nn.Module):
    """conv1 … layer3 of torchvision's ResNet-50."""

    def __init__(self) -> None:
        super().__init__()
        full = resnet50(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"):
            setattr(self, name, getattr(full, name))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 1024, H/16, W/16)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def _convert(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    sd, _ = unwrap_timm_state_dict(ckpt)
    return {k: v for k, v in sd.items() if not k.startswith(("layer4.", "fc."))}, "torchvision"


def _tokens(model: nn.Module, images: torch.Tensor) -> TokenOutput:
    fmap = model.forward_features(images)
    pooled = fmap.mean(dim=(2, 3))
    return TokenOutput(cls=pooled, patch=fmap.flatten(2).transpose(1, 2), grid=tuple(fmap.shape[-2:]), pooled=pooled)


def _torch_hub_file() -> str:
    return str(Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE)


register_encoder(
    EncoderSpec(
        name="resnet50-imagenet",
        architecture="ResNet-50 truncated after layer3, global average pool (CLAM baseline)",
        build=ResNet50Trunc,
        convert_state_dict=_convert,
        forward_tokens=_tokens,
        embed_dim=1024,
        token_dim=1024,
        patch_size=16,
        num_prefix_tokens=0,
        pooling="pooled",
        preprocess=Preprocess(input_size=224, interpolation="bilinear"),
        weights=WeightSource(env_var="RESNET50_WEIGHTS",
                             url=f"https://download.pytorch.org/models/{TORCHVISION_FILE}",
                             packaged=_torch_hub_file, license="BSD-3-Clause (torchvision)"),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        memory_format="channels_last",
        memory_format_basis="benchmarks/memory_format.py, 16 real CMU tiles, AVX2 2 threads, fp32: 12.6 → 17.6 "
                            "tiles/s (1.40×)",
        is_pathology=False,
        description="ImageNet ResNet-50 trunc (1024-d): the 'ResNet50' baseline of pathology papers",
        reference="He et al. 2016; Lu et al. 2021 (CLAM)",
    )
)
