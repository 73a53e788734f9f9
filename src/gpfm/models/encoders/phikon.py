"""Phikon (Owkin, iBOT ViT-B/16) and Phikon-v2 (DINOv2 ViT-L/16), from the Hugging Face transformers layout.

Keys are mapped explicitly to timm (q, k, v stacked into qkv). Phikon is built WITHOUT the HF pooler: that
tanh layer is untrained and must never produce features. Embedding = ``last_hidden_state[:, 0]``.
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.hf_vit import hf_dinov2_to_timm, hf_vit_to_timm
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, vit_cls_tokens

# LayerNorm eps 1e-6: owkin/phikon config changed from 1e-12 to 1e-6 "to match timm" (model card commit 0355777)
PHIKON = ViTConfig(embed_dim=768, depth=12, num_heads=12, patch_size=16, init_values=None, norm_eps=1e-6)
PHIKON_V2 = ViTConfig(embed_dim=1024, depth=24, num_heads=16, patch_size=16, init_values=1e-5, norm_eps=1e-6)

register_encoder(
    EncoderSpec(
        name="phikon",
        architecture="ViT-B/16 (768 wide, 12 blocks), GELU MLP, no LayerScale (iBOT), 224 px",
        build=lambda: build_vit(PHIKON),
        convert_state_dict=hf_vit_to_timm,
        forward_tokens=vit_cls_tokens,
        embed_dim=768,
        token_dim=768,
        patch_size=16,
        num_prefix_tokens=1,
        pooling="cls",
        preprocess=Preprocess(input_size=224, interpolation="bilinear"),
        weights=WeightSource(env_var="PHIKON_WEIGHTS", hf_repo="owkin/phikon", hf_filename="pytorch_model.bin",
                             license="Owkin non-commercial licence"),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="Phikon v1 (expert of GPFM): 768-d final-norm CLS",
        reference="Filiot et al. 2023",
    )
)

register_encoder(
    EncoderSpec(
        name="phikon-v2",
        architecture="DINOv2 ViT-L/16 (1024 wide, 24 blocks), GELU MLP, LayerScale, 224 px (HF Dinov2 layout)",
        build=lambda: build_vit(PHIKON_V2),
        convert_state_dict=hf_dinov2_to_timm,
        forward_tokens=vit_cls_tokens,
        embed_dim=1024,
        token_dim=1024,
        patch_size=16,
        num_prefix_tokens=1,
        pooling="cls",
        preprocess=Preprocess(input_size=224, interpolation="bilinear"),
        weights=WeightSource(env_var="PHIKON_V2_WEIGHTS", hf_repo="owkin/phikon-v2",
                             hf_filename="model.safetensors", license="Owkin non-commercial licence"),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="Phikon-v2: 1024-d final-norm CLS (position embedding for 224 px; [?] verify on real weights)",
        reference="Filiot et al. 2024",
    )
)
