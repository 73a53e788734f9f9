"""bf16 autocast vs fp32 on real tiles: the gate for making bf16 a default (spec: cosine ≥ 0.999)."""

import json

import pytest
import torch
from PIL import Image

from gpfm.models import create_encoder, get_encoder_spec
from gpfm.runtime import cpu_capability
from tests.conftest import shared_path


def _tiles(n=24):
    folder = shared_path("patches", "lc25000_lung_224")
    paths = sorted(folder.glob("*/*.jpeg"))[:: max(1, 900 // n)][:n]
    return [Image.open(p) for p in paths]


def _cosines(name, weights, tiles, realistic_layerscale=False):
    fp32 = create_encoder(name, weights=weights, device="cpu", precision="fp32", verbose=False)
    if realistic_layerscale:
        # random init keeps LayerScale at 1e-5, which makes every block a no-op and parity trivial; trained
        # GPFM gammas are O(0.1-1), so draw them there to exercise the real bf16 error path
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name_, p in fp32.model.named_parameters():
                if name_.endswith("gamma"):
                    p.copy_(torch.empty_like(p).uniform_(0.1, 1.0, generator=gen))
    x = torch.stack([fp32.transform(t) for t in tiles])
    ref = fp32.embed(x)
    fp32.precision = "bf16"
    half = fp32.embed(x)
    return torch.nn.functional.cosine_similarity(ref, half, dim=-1)


@pytest.mark.realdata
def test_bf16_gate_matches_measured_parity_efficientnet(record_property):
    """EfficientNet-Lite0 (real weights) measured 0.9951 min cosine here: bf16 is NOT its default, and the
    registry must say so. If the measurement ever passes, the registry entry should be updated.
    """
    cos = _cosines("efficientnet-lite0-imagenet", None, _tiles(48))
    record_property("bf16_cosine", json.dumps({"min": cos.min().item(), "median": cos.median().item()}))
    print(f"efficientnet-lite0 bf16 vs fp32 on 48 real tiles [{cpu_capability()}]: "
          f"median {cos.median().item():.6f}, min {cos.min().item():.6f}")
    passes = cos.min().item() >= 0.999
    assert passes == ("bf16" in get_encoder_spec("efficientnet-lite0-imagenet").half_precision_ok)
    assert cos.median().item() > 0.99  # bf16 is close, just not within the gate
    enc = create_encoder("efficientnet-lite0-imagenet", device="cpu", verbose=False)
    assert enc.precision == "fp32"  # the default follows the gate


@pytest.mark.realdata
@pytest.mark.slow
def test_bf16_parity_gpfm_vitl(record_property):
    torch.manual_seed(0)
    cos = _cosines("gpfm", "random", _tiles(4), realistic_layerscale=True)
    print(f"gpfm ViT-L (random weights, LayerScale 0.1-1) bf16 vs fp32 on 4 real tiles [{cpu_capability()}]: "
          f"median {cos.median().item():.6f}, min {cos.min().item():.6f}")
    assert cos.min().item() >= 0.999
