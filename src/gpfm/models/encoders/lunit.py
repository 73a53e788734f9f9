"""Lunit's DINO ViT-S/16 and ViT-S/8 (Kang et al., CVPR 2023).

From "Benchmarking self-supervised learning on diverse pathology datasets".

Reference definition: timm ``vit_small_patch{16,8}_224`` (what kaiko-ai/eva loads the released
``dino_vit_small_patch{16,8}_ep200.torch`` into); feature = final-norm CLS (384-d). Normalisation: Lunit's
training statistics, as published with the weights.
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, vit_cls_tokens

_RELEASE = ("https://github.com/lunit-io/benchmark-ssl-pathology/releases/download/pretrained-weights/"
            "dino_vit_small_patch{}_ep200.torch")


def lunit_to_timm(ckpt):
    """DINO/timm layout; a ``backbone.`` prefix (training wrapper) and any projection head are dropped."""
    sd, fmt = unwrap_timm_state_dict(ckpt)
    return {k.removeprefix("backbone."): v for k, v in sd.items() if not k.startswith("head")}, fmt


for _patch in (16, 8):
    _cfg = ViTConfig(embed_dim=384, depth=12, num_heads=6, patch_size=_patch, init_values=None)
    register_encoder(
        EncoderSpec(
            name=f"lunit-vits{_patch}",
            architecture=f"DINO ViT-S/{_patch} (384 wide, 12 blocks), GELU MLP, no LayerScale, 224 px",
            build=(lambda c=_cfg: build_vit(c)),
            convert_state_dict=lunit_to_timm,
            forward_tokens=vit_cls_tokens,
            embed_dim=384,
            token_dim=384,
            patch_size=_patch,
            num_prefix_tokens=1,
            pooling="cls",
            preprocess=Preprocess(input_size=224, interpolation="bicubic", mean=(0.70322989, 0.53606487, 0.66096631),
                                  std=(0.21716536, 0.26081574, 0.20723464), norm_name="lunit"),
            weights=WeightSource(env_var=f"LUNIT_VITS{_patch}_WEIGHTS", url=_RELEASE.format(_patch),
                                 license="Lunit non-commercial research terms (benchmark-ssl-pathology release)"),
            tile_recipe="trident-112um",
            tile_fov_um=112.0,
            description=f"Lunit DINO ViT-S/{_patch}: 384-d final-norm CLS",
            reference="Kang et al., CVPR 2023 (lunit-io/benchmark-ssl-pathology)",
        )
    )
