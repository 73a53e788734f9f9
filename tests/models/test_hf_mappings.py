"""Phikon/Phikon-v2 (HF transformers layouts) and CONCH (CoCa visual) conversions, checked against references."""

import pytest
import torch

from gpfm.models import CheckpointError
from gpfm.models.checkpoints import load_strict
from gpfm.models.hf_vit import hf_dinov2_to_timm, hf_vit_to_timm, timm_to_hf_vit
from gpfm.models.vit import ViTConfig, build_vit

transformers = pytest.importorskip("transformers")


def test_hf_vit_matches_transformers_vitmodel():
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                                 image_size=64, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu")
    torch.manual_seed(0)
    hf = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    sd, fmt = hf_vit_to_timm({f"vit.{k}": v for k, v in hf.state_dict().items()})
    assert fmt == "hf-vit"
    ours = build_vit(ViTConfig(embed_dim=64, depth=3, num_heads=4, patch_size=16, img_size=64, init_values=None)).eval()
    load_strict(ours, sd, source="hf")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        out = ours.forward_tokens(x)
    assert (ref - out).abs().max().item() < 1e-4  # spec: accept only if CLS parity < 1e-4 in fp32
    legacy = timm_to_hf_vit(sd)  # the released Phikon checkpoint uses the transformers-4 names
    assert "encoder.layer.0.attention.attention.query.weight" in legacy
    back, _ = hf_vit_to_timm(legacy)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_hf_pooler_is_dropped_not_loaded():
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=16)
    hf = transformers.ViTModel(cfg, add_pooling_layer=True)
    sd, _ = hf_vit_to_timm(hf.state_dict())
    assert not any("pooler" in k for k in sd)


def test_hf_dinov2_matches_transformers_dinov2model():
    cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4,
                                    image_size=64, patch_size=16, layer_norm_eps=1e-6, layerscale_value=0.5)
    torch.manual_seed(0)
    hf = transformers.Dinov2Model(cfg).eval()
    sd, fmt = hf_dinov2_to_timm(hf.state_dict())
    ours = build_vit(ViTConfig(embed_dim=64, depth=2, num_heads=4, patch_size=16, img_size=64, init_values=0.5)).eval()
    load_strict(ours, sd, source="hf-dinov2")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        out = ours.forward_tokens(x)
    assert fmt == "hf-dinov2" and (ref - out).abs().max().item() < 1e-4


def test_unexpected_hf_key_is_named():
    with pytest.raises(CheckpointError, match="encoder.layer.0.foo.weight"):
        hf_vit_to_timm({"encoder.layer.0.foo.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="incomplete q/k/v"):
        hf_vit_to_timm({"encoder.layer.0.attention.attention.query.weight": torch.zeros(2, 2)})


def test_conch_checkpoint_keeps_visual_tower_only():
    from gpfm.models import get_encoder_spec

    spec = get_encoder_spec("conch")
    visual = spec.build()
    ckpt = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    ckpt.update({"visual.attn_pool_caption.query": torch.zeros(256, 768), "visual.ln_caption.weight": torch.ones(768),
                 "text.token_embedding.weight": torch.zeros(10, 8), "logit_scale": torch.tensor(1.0)})
    sd, fmt = spec.convert_state_dict(ckpt)
    fresh = spec.build().eval()
    load_strict(fresh, sd, source="conch")
    out = spec.forward_tokens(fresh, torch.randn(2, 3, 224, 224))
    assert fmt == "conch-coca" and out.pooled.shape == (2, 512) and out.patch.shape == (2, 196, 768)
    assert torch.allclose(out.cls.norm(dim=-1), torch.ones(2), atol=1e-5)  # distillation target is unit-norm
