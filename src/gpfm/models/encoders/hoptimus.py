"""H-optimus-0 (Bioptimus): ViT-g/14, 4 registers, SwiGLU, its own normalisation; 1536-d CLS. Apache-2.0."""

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, vit_cls_tokens

HOPTIMUS0 = ViTConfig(embed_dim=1536, depth=40, num_heads=24, patch_size=14, init_values=1e-5, ffn="swiglu",
                      mlp_ratio=2.66667 * 2, reg_tokens=4, no_embed_class=True)

register_encoder(
    EncoderSpec(
        name="h-optimus-0",
        architecture="ViT-g/14 (1536 wide, 40 blocks, 24 heads), SwiGLU, 4 registers, LayerScale, 224 px",
        build=lambda: build_vit(HOPTIMUS0),
        convert_state_dict=unwrap_timm_state_dict,
        forward_tokens=vit_cls_tokens,
        embed_dim=1536,
        token_dim=1536,
        patch_size=14,
        num_prefix_tokens=5,
        pooling="cls",
        preprocess=Preprocess(input_size=224, interpolation="bicubic", mean=(0.707223, 0.578729, 0.703617),
                              std=(0.211883, 0.230117, 0.177517), norm_name="h-optimus"),
        weights=WeightSource(env_var="HOPTIMUS0_WEIGHTS", hf_repo="bioptimus/H-optimus-0",
                             hf_filename="pytorch_model.bin", license="Apache-2.0"),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="H-optimus-0: 1536-d CLS, own mean/std",
        reference="Saillard et al. 2024, H-optimus-0 model card",
    )
)
