"""Both GPFM checkpoint layouts load strictly and give identical embeddings; broken files fail loudly."""

import pytest
import torch

from gpfm.models import CheckpointError, create_encoder, detect_gpfm_format, gpfm_to_timm, timm_to_gpfm_teacher
from gpfm.models.checkpoints import load_strict, save_safetensors_atomic, save_torch_atomic
from gpfm.models.vit import GPFM_VITL14, ViTConfig, build_vit

TINY = ViTConfig(embed_dim=64, depth=8, num_heads=4, patch_size=14, img_size=56)


def _dino_head(dim: int) -> dict[str, torch.Tensor]:
    return {"mlp.0.weight": torch.randn(32, dim), "mlp.0.bias": torch.zeros(32),
            "last_layer.parametrizations.weight.original0": torch.ones(128, 1),
            "last_layer.parametrizations.weight.original1": torch.randn(128, 16)}


def _cls(model, x):
    with torch.no_grad():
        return model.forward_tokens(x)[:, 0]


def test_format_a_has_the_release_layout():
    src = build_vit(TINY).state_dict()
    ckpt = timm_to_gpfm_teacher(src, chunks=4, dino_head=_dino_head(64))
    keys = set(ckpt["teacher"])
    assert "backbone.mask_token" in keys and "backbone.cls_token" in keys
    # chunk c holds blocks 2c, 2c+1 for depth 8 / 4 chunks; global indices are kept
    assert "backbone.blocks.0.1.norm1.weight" in keys and "backbone.blocks.3.7.mlp.fc2.bias" in keys
    assert "backbone.blocks.1.1.norm1.weight" not in keys
    assert any(k.startswith("dino_head.") for k in keys)


@pytest.mark.parametrize("variant", ["teacher", "backbone_prefix", "chunked_no_prefix", "state_dict_wrapper", "timm"])
def test_every_layout_is_detected_and_converts_to_identical_model(variant):
    torch.manual_seed(0)
    ref = build_vit(TINY).eval()
    sd = ref.state_dict()
    a = timm_to_gpfm_teacher(sd, chunks=4, dino_head=_dino_head(64))
    body = a["teacher"]
    variants = {
        "teacher": a,
        "backbone_prefix": body,
        # the slide2vec-style "defensive unwrap": prefix stripped, blocks still chunked
        "chunked_no_prefix": {k.removeprefix("backbone."): v for k, v in body.items() if k.startswith("backbone.")},
        "state_dict_wrapper": {"state_dict": body},
        "timm": sd,
    }
    expected = {"teacher": "dinov2-teacher", "timm": "timm"}.get(variant, "dinov2-backbone")
    assert detect_gpfm_format(variants[variant]) == expected
    converted, fmt = gpfm_to_timm(variants[variant])
    assert fmt == expected
    model = build_vit(TINY).eval()
    load_strict(model, converted, source=variant)
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_cls(model, x), _cls(ref, x))


def test_missing_or_renamed_tensor_fails_naming_the_keys():
    sd = build_vit(TINY).state_dict()
    broken = dict(sd)
    del broken["blocks.3.attn.qkv.weight"]
    with pytest.raises(CheckpointError, match=r"missing 1: blocks\.3\.attn\.qkv\.weight"):
        load_strict(build_vit(TINY), broken, source="ckpt.pth")
    renamed = dict(sd)
    renamed["blocks.3.attn.qkv_w"] = renamed.pop("blocks.3.attn.qkv.weight")
    with pytest.raises(CheckpointError, match=r"ckpt\.pth:.*missing 1: blocks\.3\.attn\.qkv\.weight.*unexpected 1: blocks\.3\.attn\.qkv_w"):
        load_strict(build_vit(TINY), renamed, source="ckpt.pth")


def test_unknown_layout_lists_first_keys():
    with pytest.raises(CheckpointError, match="first keys: foo, bar"):
        detect_gpfm_format({"foo": torch.zeros(1), "bar": torch.zeros(1)})


def test_register_tokens_are_rejected_by_strict_load():
    sd = build_vit(TINY).state_dict()
    sd["reg_token"] = torch.zeros(1, 4, 64)
    with pytest.raises(CheckpointError, match="unexpected 1: reg_token"):
        load_strict(build_vit(TINY), sd, source="x")


@pytest.mark.slow
def test_gpfm_vitl_both_release_layouts_load_strictly_and_agree(tmp_path):
    """A random GPFM ViT-L saved as format A (.pth) and format B (safetensors) gives identical embeddings."""
    torch.manual_seed(0)
    ref = build_vit(GPFM_VITL14).eval()
    sd = ref.state_dict()
    path_a, path_b = tmp_path / "GPFM_teacher.pth", tmp_path / "GPFM_timm.safetensors"
    save_torch_atomic(timm_to_gpfm_teacher(sd, dino_head=_dino_head(1024)), path_a)
    save_safetensors_atomic(sd, path_b)
    del ref
    # format A has a published MD5; a random file does not match it: refused unless explicitly allowed
    with pytest.raises(CheckpointError, match="does not match the published"):
        create_encoder("gpfm", weights=path_a, device="cpu", precision="fp32")
    enc_a = create_encoder("gpfm", weights=path_a, device="cpu", precision="fp32", allow_unverified=True)
    assert enc_a.checkpoint_format == "dinov2-teacher" and len(enc_a.weights_sha256) == 64
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    emb_a = enc_a.embed(x)
    del enc_a
    enc_b = create_encoder("gpfm", weights=path_b, device="cpu", precision="fp32")
    assert enc_b.checkpoint_format == "timm"
    emb_b = enc_b.embed(x)
    assert emb_a.shape == (2, 1024)
    assert (emb_a - emb_b).abs().max().item() < 1e-5
    # `gpfm convert` round trip: A → timm safetensors loads and agrees too
    from gpfm.models.convert import convert_gpfm_checkpoint

    rep = convert_gpfm_checkpoint(path_a, tmp_path / "converted.safetensors")
    assert rep.source_format == "dinov2-teacher" and rep.n_tensors == len(sd)
    del enc_b
    enc_c = create_encoder("gpfm", weights=rep.out, device="cpu", precision="fp32")
    assert (enc_c.embed(x) - emb_b).abs().max().item() < 1e-5
