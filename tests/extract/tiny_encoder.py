"""A tiny, deterministic random encoder registered as ``test-tiny`` (tests and torchrun children import it).

Conv 8×8/8 → GELU → global mean → linear, on 64 px inputs: fast on a busy 2-core machine, yet a real
function of the pixels, so any change in the tiles read changes the features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gpfm.models import ENCODERS, EncoderSpec, Preprocess, TokenOutput, WeightSource, register_encoder

NAME = "test-tiny"


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1234)  # identical weights in every process
        self.conv = nn.Conv2d(3, 16, 8, stride=8)
        self.head = nn.Linear(16, 32)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _tokens(model: nn.Module, images: torch.Tensor) -> TokenOutput:
    fmap = torch.nn.functional.gelu(model.conv(images))
    pooled = model.head(fmap.mean(dim=(2, 3)))
    return TokenOutput(cls=pooled, patch=None, grid=None, pooled=pooled)


def _convert(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    return dict(ckpt), "plain"


def register() -> str:
    """Register ``test-tiny`` once per process; returns its name."""
    if NAME not in ENCODERS.names():
        register_encoder(EncoderSpec(
            name=NAME, architecture="test conv", build=_Tiny, convert_state_dict=_convert, forward_tokens=_tokens,
            embed_dim=32, token_dim=None, patch_size=None, num_prefix_tokens=0, pooling="pooled",
            preprocess=Preprocess(input_size=64), weights=WeightSource(env_var="TEST_TINY_WEIGHTS"),
            half_precision_ok=frozenset(), is_pathology=False, description="tests only",
        ))
    return NAME
