"""Every registered encoder builds (random weights) and returns its documented dims on a real H&E tile."""

import pytest
import torch
from PIL import Image

from gpfm.models import create_encoder, get_encoder_spec, list_encoders
from tests.conftest import shared_path

GIANT = {"uni2-h", "virchow", "virchow2", "h-optimus-0", "h-optimus-1", "prov-gigapath", "midnight"}  # > 600 M params: slow on a 2-core CPU


def _params(name):
    return [pytest.param(n, marks=pytest.mark.slow) if n in GIANT else n for n in name]


@pytest.fixture(scope="module")
def real_tile() -> Image.Image:
    return Image.open(shared_path("patches", "nct_crc_he_100k_samples", "TUM-AACHEHDV.tif"))


@pytest.mark.realdata
@pytest.mark.parametrize("name", _params(list_encoders()))
def test_encoder_dims_on_real_tile(name, real_tile):
    spec = get_encoder_spec(name)
    enc = create_encoder(name, weights="random", device="cpu", precision="fp32")
    x = enc.transform(real_tile).unsqueeze(0)
    size = spec.preprocess.input_size
    assert x.shape == (1, 3, size, size)
    out = enc.tokens(x)
    assert out.pooled.shape == (1, spec.embed_dim) and torch.isfinite(out.pooled).all()
    assert enc.embed(x).shape == (1, spec.embed_dim)
    if spec.token_dim is not None:
        h, w = out.grid
        assert out.patch.shape == (1, h * w, spec.token_dim)
        if spec.patch_size and spec.num_prefix_tokens:  # ViTs: grid = input / patch; prefix count is the model's
            assert (h, w) == (size // spec.patch_size, size // spec.patch_size)
            assert enc.model.num_prefix_tokens == spec.num_prefix_tokens if hasattr(enc.model, "num_prefix_tokens") \
                else enc.model.trunk.num_prefix_tokens == spec.num_prefix_tokens
