"""Virchow and Virchow2 (Paige): ViT-H/14 with SwiGLU; embedding = CLS ⊕ mean of patch tokens (2560-d).

The patch mean skips ALL prefix tokens (CLS + 4 registers for Virchow2). Weights: gated, CC-BY-NC-ND-4.0.
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, vit_cls_mean_tokens

_BASE = dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14, init_values=1e-5, ffn="swiglu",
             mlp_ratio=5.3375, dynamic_img_size=True)
VIRCHOW = ViTConfig(**_BASE)
VIRCHOW2 = ViTConfig(**_BASE, reg_tokens=4)

for _name, _cfg, _repo, _regs in (("virchow", VIRCHOW, "paige-ai/Virchow", 0),
                                   ("virchow2", VIRCHOW2, "paige-ai/Virchow2", 4)):
    register_encoder(
        EncoderSpec(
            name=_name,
            architecture=f"ViT-H/14 (1280 wide, 32 blocks), SwiGLU, {_regs} registers, LayerScale, 224 px",
            build=(lambda c=_cfg: build_vit(c)),
            convert_state_dict=unwrap_timm_state_dict,
            forward_tokens=vit_cls_mean_tokens,
            embed_dim=2560,
            token_dim=1280,
            patch_size=14,
            num_prefix_tokens=1 + _regs,
            pooling="cls+mean",
            preprocess=Preprocess(input_size=224, interpolation="bicubic"),
            weights=WeightSource(env_var=f"{_name.upper()}_WEIGHTS", hf_repo=_repo,
                                 hf_filename="pytorch_model.bin", license="CC-BY-NC-ND-4.0", gated=True),
            tile_recipe="trident-112um",
            tile_fov_um=112.0,
            half_precision_ok=frozenset({"fp16"}),
            half_precision_basis=f"authors: the {_repo} model card runs it under torch.autocast(cuda, float16)",
            description=f"{_name}: CLS ⊕ mean(patch tokens), 2560-d",
            reference="Vorontsov et al., Nat. Med. 2024; Zimmermann et al. 2024 (Virchow2)",
        )
    )
