"""EMA-teacher export: formats A/B load back strictly (any size via config.json; ViT-L via create_encoder)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gpfm.models import create_encoder
from gpfm.models.checkpoints import CheckpointError, read_checkpoint
from gpfm.models.vit import GPFM_VITL14, build_vit
from gpfm.pretrain.config import load_config
from gpfm.pretrain.export import export_from_state, export_teacher, load_exported_encoder
from gpfm.pretrain.heads import DINOHead
from gpfm.pretrain.meta_arch import MetaArch

TINY = [
    "distill.experts=[]",
    "student.embed_dim=32",
    "student.depth=2",
    "student.num_heads=2",
    "heads.dino_out_dim=64",
    "heads.dino_hidden_dim=32",
    "heads.dino_bottleneck_dim=16",
]


def test_tiny_export_round_trip(tmp_path):
    cfg = load_config(None, TINY, preset="tiny_cpu")
    meta = MetaArch(cfg, torch.device("cpu"))
    with torch.no_grad():  # make the teacher differ from a fresh init so the check is meaningful
        for p in meta.teacher.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = export_teacher(meta, tmp_path / "exp", iteration=7)
    enc = load_exported_encoder(out)
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        ref = meta.teacher.backbone.forward_tokens(x)[:, 0]
    assert torch.allclose(enc.embed(x), ref, atol=1e-5)
    fmt_a = read_checkpoint(out / "teacher_checkpoint.pth")["teacher"]
    assert "backbone.mask_token" in fmt_a and any(k.startswith("dino_head.") for k in fmt_a)
    assert torch.equal(fmt_a["backbone.mask_token"], meta.teacher.backbone.mask_token.detach())
    # a wrong architecture is refused by the strict load, naming the keys
    model = build_vit(dataclasses.replace(meta.student.vit_cfg, depth=3))
    from gpfm.models.checkpoints import gpfm_to_timm, load_strict

    with pytest.raises(CheckpointError, match="missing"):
        load_strict(model, gpfm_to_timm(read_checkpoint(out / "model.safetensors"))[0], "x")


def test_an_export_is_an_encoder_by_name_for_create_encoder_and_gpfm_embed(tmp_path):
    """``pretrained:<folder>`` works wherever an encoder name does: create_encoder and the embed command."""
    import h5py
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from gpfm.cli import app
    from gpfm.errors import GpfmError

    cfg = load_config(None, TINY, preset="tiny_cpu")
    meta = MetaArch(cfg, torch.device("cpu"))
    with torch.no_grad():
        for p in meta.teacher.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = export_teacher(meta, tmp_path / "exp", iteration=3)
    enc = create_encoder(f"pretrained:{out}", device="cpu", precision="fp32", verbose=False)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = meta.teacher.backbone.forward_tokens(x)[:, 0]
    assert torch.allclose(enc.embed(x), ref, atol=1e-5) and enc.weights_path.endswith("teacher_checkpoint.pth")
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(tiles / f"t{i}.png")
    result = CliRunner().invoke(app, ["embed", str(tiles), "-o", str(tmp_path / "f.h5"), "-e", f"pretrained:{out}",
                                      "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "f.h5", "r") as h5:
        feats = h5["features"][:]
    want = enc.embed(torch.stack([enc.transform(Image.open(tiles / f"t{i}.png")) for i in range(3)]))
    assert feats.shape == (3, 32) and np.allclose(feats, want.numpy(), atol=1e-5)
    with pytest.raises(GpfmError, match="pretrain-export"):
        create_encoder(f"pretrained:{tmp_path / 'nothing'}", device="cpu")


@pytest.mark.slow
def test_vitl14_export_loads_through_create_encoder(tmp_path):
    torch.manual_seed(0)
    backbone = build_vit(GPFM_VITL14, mask_token=True)
    head = DINOHead(1024, 256, hidden_dim=64, bottleneck_dim=32)
    out = export_from_state(backbone.state_dict(), head.state_dict(), GPFM_VITL14, tmp_path / "vitl")
    # format A is the release layout; its pinned MD5 belongs to the release file, so our own export needs
    # allow_unverified (the strict key/shape check still applies)
    enc = create_encoder(
        "gpfm",
        weights=out / "teacher_checkpoint.pth",
        device="cpu",
        precision="fp32",
        allow_unverified=True,
        verbose=False,
    )
    assert enc.checkpoint_format == "dinov2-teacher"
    loaded, source = enc.model.state_dict(), backbone.state_dict()
    assert set(loaded) == set(source) - {"mask_token"}
    for key in ("cls_token", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.23.ls2.gamma", "norm.bias"):
        assert torch.equal(loaded[key], source[key]), key
