"""Prov-GigaPath tile encoder (Xu et al., Nature 2024): a ViT-g with 16 px patches, 1536-d final-norm CLS.

Reference definition: the timm config of ``prov-gigapath/prov-gigapath`` — ``vit_giant_patch14_dinov2`` with
``patch_size=16, img_size=224, mlp_ratio=5.33334, init_values=1e-5, num_classes=0`` (SwiGLU FFN, no
registers). Its model card resizes the shorter side to 256 (bicubic) and centre-crops 224, ImageNet mean/std.
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, vit_cls_tokens

GIGAPATH = ViTConfig(embed_dim=1536, depth=40, num_heads=24, patch_size=16, init_values=1e-5, ffn="swiglu",
                     mlp_ratio=5.33334)

register_encoder(
    EncoderSpec(
        name="prov-gigapath",
        architecture="ViT-g/16 (1536 wide, 40 blocks, 24 heads), SwiGLU, LayerScale, no registers, 224 px",
        build=lambda: build_vit(GIGAPATH),
        convert_state_dict=unwrap_timm_state_dict,
        forward_tokens=vit_cls_tokens,
        embed_dim=1536,
        token_dim=1536,
        patch_size=16,
        num_prefix_tokens=1,
        pooling="cls",
        preprocess=Preprocess(input_size=224, interpolation="bicubic", resize="shorter_then_center_crop",
                              resize_to=256),
        weights=WeightSource(env_var="PROV_GIGAPATH_WEIGHTS", hf_repo="prov-gigapath/prov-gigapath",
                             hf_filename="pytorch_model.bin",
                             license="Apache-2.0 model card (research use terms)", gated=True),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="Prov-GigaPath tile encoder (a GPFM baseline): 1536-d final-norm CLS",
        reference="Xu et al., Nature 2024; prov-gigapath/prov-gigapath model card",
    )
)
