"""Encoders outside the catalogue: ``timm:<name>`` with a weights file, and ``gpfm.encoders`` entry points."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import gpfm.models.catalog as catalog
from gpfm.errors import GpfmError
from gpfm.models import create_encoder, get_encoder_spec, list_encoders
from gpfm.models.custom import PluginError


def test_any_timm_model_by_name_with_its_own_weights_file(tmp_path):
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10)  # a head that must be dropped
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    enc = create_encoder("timm:resnet18", weights=tmp_path / "r18.pth", device="cpu", precision="fp32")
    assert enc.embed_dim == 512 and enc.spec.preprocess.input_size == 224
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_head(reference.eval().forward_features(x), pre_logits=True)
    assert torch.allclose(enc.embed(x), expected, atol=1e-5)  # the file's weights, strictly loaded
    assert enc.weights_sha256 != "random"


def test_unknown_timm_model_is_one_line():
    with pytest.raises(GpfmError, match="timm has no model 'resnet1999'"):
        get_encoder_spec("timm:resnet1999")


class _EntryPoint:
    def __init__(self, name, target):
        self.name, self.value, self._target = name, f"tests:{name}", target

    def load(self):
        return self._target


def _register_lab_encoder():
    import dataclasses

    from gpfm.models import register_encoder

    base = get_encoder_spec("timm:resnet18")
    register_encoder(dataclasses.replace(base, name="lab-resnet", description="a lab's in-house model"))


def test_entry_point_plugins_register_encoders(monkeypatch):
    import importlib.metadata

    def fake(group=None):
        return [_EntryPoint("lab", _register_lab_encoder)] if group == "gpfm.encoders" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.setattr(catalog, "_plugins_loaded", False)
    assert "lab-resnet" in list_encoders()
    enc = create_encoder("lab-resnet", weights="random", device="cpu", precision="fp32")
    assert enc.embed(torch.randn(1, 3, 224, 224)).shape == (1, 512)


def test_a_broken_plugin_is_named(monkeypatch):
    import importlib.metadata

    def broken():
        raise ImportError("no module named labmodels")

    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [_EntryPoint("badlab", broken)] if group == "gpfm.encoders" else [])
    monkeypatch.setattr(catalog, "_plugins_loaded", False)
    with pytest.raises(PluginError, match="encoder plugin 'badlab'.*no module named labmodels"):
        list_encoders()


@pytest.mark.realdata
def test_a_timm_model_extracts_a_real_slide(tmp_path, shared_data):
    from gpfm.extract import extract_slides
    from gpfm.wsi import read_features

    cmu_path = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    summary = extract_slides([cmu_path], "timm:resnet18", tmp_path / "job", weights="random", device="cpu",
                             precision="fp32", workers=0, progress=False)
    state = summary.slides[0]
    assert state.status == "done", state.error
    feats = read_features(state.outputs["features"]["path"])["features"]
    assert feats.shape == (state.n_tiles, 512) and np.isfinite(feats).all()


@pytest.mark.parametrize(("name", "grid", "dim"), [("timm:resnet18", (7, 7), 512),
                                                   ("timm:vit_tiny_patch16_224", (14, 14), 192)])
def test_timm_models_expose_their_spatial_tokens_as_patch_tokens(name, grid, dim):
    """A CNN's map cells and a ViT's patch tokens (prefix dropped) are patch tokens: usable as an expert's patch target."""
    from gpfm.pretrain.experts import Expert

    enc = create_encoder(name, weights="random", device="cpu", precision="fp32", verbose=False)
    assert enc.spec.token_dim == dim and enc.spec.patch_size == 224 // grid[0]
    out = enc.tokens(torch.randn(2, 3, 224, 224))
    assert out.grid == grid and out.patch.shape == (2, grid[0] * grid[1], dim) and out.pooled.shape == (2, dim)
    expert = Expert(enc)
    assert expert.has_patch_target and expert.patch_dim == dim
