"""kaiko.ai encoders: ViT-S/B (patch 8 and 16), ViT-L/14 and Midnight-12k; mean = std = 0.5.

The ViTs are those of "Towards large-scale training of pathology foundation models" (Aben et al. 2024);
Midnight-12k is Karasikov et al. 2025.

Reference definitions:

* ViT-S/B: kaiko-ai/towards_large_pathology_fms ``hubconf.py`` — timm ``vit_{small,base}_patch{16,8}_224``
  (DINO: GELU MLP, no LayerScale), headless; feature = final-norm CLS.
* ViT-L/14: the same hub file — timm ``vit_large_patch14_reg4_dinov2`` (4 registers, LayerScale; 518 px
  position grid resampled by timm, with antialiasing, to the 224 px input).
* Midnight: ``kaiko-ai/midnight`` in transformers' ``Dinov2Model`` layout, ViT-g/14 with SwiGLU, no registers;
  its model card's classification feature is CLS ⊕ mean(patch tokens), 3072-d.
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.hf_vit import hf_dinov2_to_timm
from gpfm.models.spec import HALF_MEAN, HALF_STD, EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, fit_pos_embed, vit_cls_mean_tokens, vit_cls_tokens

_KAIKO_LICENCE = "Kaiko Non-Commercial Public License v1"
_PRE = Preprocess(input_size=224, interpolation="bicubic", mean=HALF_MEAN, std=HALF_STD, norm_name="half")
_RELEASE = "https://github.com/kaiko-ai/towards_large_pathology_fms/releases/download/0.0.1/{}.pth"

_SIZES = {"s": (384, 12, 6), "b": (768, 12, 12)}
_KAIKO = {f"vit{size}{patch}": ViTConfig(embed_dim=w, depth=d, num_heads=h, patch_size=patch, init_values=None)
          for size, (w, d, h) in _SIZES.items() for patch in (16, 8)}
_KAIKO["vitl14"] = ViTConfig(embed_dim=1024, depth=24, num_heads=16, patch_size=14, init_values=1e-5, reg_tokens=4,
                             no_embed_class=True)
MIDNIGHT = ViTConfig(embed_dim=1536, depth=40, num_heads=24, patch_size=14, init_values=1e-5, ffn="swiglu",
                     mlp_ratio=5.33334)


def _kaiko_convert(cfg: ViTConfig):
    def convert(ckpt):
        sd, fmt = unwrap_timm_state_dict(ckpt)
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        return fit_pos_embed(sd, cfg, antialias=True), fmt

    return convert


def _midnight_convert(ckpt):
    sd, fmt = hf_dinov2_to_timm(ckpt)
    return fit_pos_embed(sd, MIDNIGHT, antialias=False), fmt  # transformers' Dinov2 resamples without antialias


for _short, _cfg in _KAIKO.items():
    _w, _p = _cfg.embed_dim, _cfg.patch_size
    _arch = ("DINOv2 ViT-L/14 (1024 wide, 24 blocks), 4 registers, LayerScale" if _short == "vitl14" else
             f"DINO ViT-{_short[3].upper()}/{_p} ({_w} wide, 12 blocks), GELU MLP, no LayerScale")
    register_encoder(
        EncoderSpec(
            name=f"kaiko-{_short}",
            architecture=f"{_arch}, 224 px",
            build=(lambda c=_cfg: build_vit(c)),
            convert_state_dict=_kaiko_convert(_cfg),
            forward_tokens=vit_cls_tokens,
            embed_dim=_w,
            token_dim=_w,
            patch_size=_p,
            num_prefix_tokens=_cfg.num_prefix_tokens,
            pooling="cls",
            preprocess=_PRE,
            weights=WeightSource(env_var=f"KAIKO_{_short.upper()}_WEIGHTS", url=_RELEASE.format(_short),
                                 license=_KAIKO_LICENCE),
            tile_recipe="trident-112um",
            tile_fov_um=112.0,
            description=f"kaiko.ai {_short}: {_w}-d final-norm CLS",
            reference="Aben et al. 2024, Towards large-scale training of pathology foundation models",
        )
    )

register_encoder(
    EncoderSpec(
        name="midnight",
        architecture="DINOv2 ViT-g/14 (1536 wide, 40 blocks, 24 heads), SwiGLU, LayerScale, no registers, 224 px",
        build=lambda: build_vit(MIDNIGHT),
        convert_state_dict=_midnight_convert,
        forward_tokens=vit_cls_mean_tokens,
        embed_dim=3072,
        token_dim=1536,
        patch_size=14,
        num_prefix_tokens=1,
        pooling="cls+mean",
        preprocess=_PRE,
        weights=WeightSource(env_var="MIDNIGHT_WEIGHTS", hf_repo="kaiko-ai/midnight", hf_filename="model.safetensors",
                             license="MIT (model card)"),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="Midnight-12k: CLS ⊕ mean(patch tokens), 3072-d (the model card's classification feature)",
        reference="Karasikov et al. 2025, Training state-of-the-art pathology foundation models with orders of "
                  "magnitude less data; kaiko-ai/midnight",
    )
)
