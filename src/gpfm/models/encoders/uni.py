"""UNI (Chen et al., Nat. Med. 2024) and UNI2-h (Mahmood Lab): timm-layout ViTs, final-norm CLS.

Weights are gated on Hugging Face (CC-BY-NC-ND-4.0); they load strictly from a local file.
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, vit_cls_tokens

UNI_VITL16 = ViTConfig(embed_dim=1024, depth=24, num_heads=16, patch_size=16, init_values=1e-5)
# UNI2-h: ViT-H/14-class, 1536 wide, SwiGLU (hidden ratio 2.66667*2), 8 registers, pos-embed on patches only
UNI2H = ViTConfig(embed_dim=1536, depth=24, num_heads=24, patch_size=14, init_values=1e-5, ffn="swiglu",
                  mlp_ratio=2.66667 * 2, reg_tokens=8, no_embed_class=True, dynamic_img_size=True)

_LICENSE = "CC-BY-NC-ND-4.0 (academic non-commercial use)"

register_encoder(
    EncoderSpec(
        name="uni",
        architecture="ViT-L/16 (1024 wide, 24 blocks), GELU MLP, LayerScale 1e-5, no registers, 224 px",
        build=lambda: build_vit(UNI_VITL16),
        convert_state_dict=unwrap_timm_state_dict,
        forward_tokens=vit_cls_tokens,
        embed_dim=1024,
        token_dim=1024,
        patch_size=16,
        num_prefix_tokens=1,
        pooling="cls",
        preprocess=Preprocess(input_size=224, interpolation="bicubic"),
        weights=WeightSource(env_var="UNI_WEIGHTS", hf_repo="MahmoodLab/uni", hf_filename="pytorch_model.bin",
                             license=_LICENSE, gated=True),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="UNI v1 (expert of GPFM): 1024-d final-norm CLS",
        reference="Chen et al., Nature Medicine 2024",
    )
)

register_encoder(
    EncoderSpec(
        name="uni2-h",
        architecture="ViT-H/14-class (1536 wide, 24 blocks, 24 heads), SwiGLU, 8 registers, LayerScale, 224 px",
        build=lambda: build_vit(UNI2H),
        convert_state_dict=unwrap_timm_state_dict,
        forward_tokens=vit_cls_tokens,
        embed_dim=1536,
        token_dim=1536,
        patch_size=14,
        num_prefix_tokens=9,
        pooling="cls",
        preprocess=Preprocess(input_size=224, interpolation="bicubic"),
        weights=WeightSource(env_var="UNI2H_WEIGHTS", hf_repo="MahmoodLab/UNI2-h", hf_filename="pytorch_model.bin",
                             license=_LICENSE, gated=True),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="UNI2-h: 1536-d final-norm CLS",
        reference="Mahmood Lab, UNI2-h model card (2025)",
    )
)
