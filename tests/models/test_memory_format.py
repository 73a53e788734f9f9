"""The memory format an encoder's spec records is applied by the encoder itself, and changes nothing but speed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gpfm.models import create_encoder, get_encoder_spec, list_encoders


@pytest.mark.parametrize("name", list_encoders())
def test_every_spec_records_a_valid_memory_format(name):
    spec = get_encoder_spec(name)
    assert spec.memory_format in {"contiguous", "channels_last"}
    if spec.memory_format != "contiguous":
        assert "memory_format.py" in spec.memory_format_basis  # a measured choice says where it was measured


def test_channels_last_is_applied_and_gives_the_same_features():
    base = get_encoder_spec("efficientnet-lite0-imagenet")
    torch.manual_seed(0)
    x = torch.randn(4, 3, 224, 224)
    out = {}
    for fmt in ("contiguous", "channels_last"):
        spec = dataclasses.replace(base, name=f"effnet-{fmt}", memory_format=fmt)
        enc = create_encoder(spec, device="cpu", precision="fp32", verbose=False)
        conv = next(m for m in enc.model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (fmt == "channels_last")
        assert enc.metadata()["memory_format"] == fmt
        out[fmt] = enc.embed(x)
    assert torch.allclose(out["contiguous"], out["channels_last"], atol=1e-4, rtol=1e-4)
