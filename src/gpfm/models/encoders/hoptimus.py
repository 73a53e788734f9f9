"""Bioptimus encoders: H-optimus-0 and H-optimus-1 (ViT-g/14) and H0-mini (ViT-B/14 distilled from H-optimus-0).

Reference definitions (timm configs of the model cards): ``vit_giant_patch14_reg4_dinov2`` with
``init_values=1e-5, img_size=224`` for H-optimus-0/1; ``vit_base_patch14_reg4_dinov2`` with
``mlp_layer=SwiGLUPacked, act_layer=SiLU`` for H0-mini. All use Bioptimus' own mean/std. The model cards run
them under ``torch.autocast("cuda", dtype=torch.float16)``: that authors' prescription is why fp16 is their CUDA
default here (bf16 is not prescribed and stays opt-in).
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import unwrap_timm_state_dict
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, fit_pos_embed, vit_cls_mean_tokens, vit_cls_tokens

HOPTIMUS = ViTConfig(embed_dim=1536, depth=40, num_heads=24, patch_size=14, init_values=1e-5, ffn="swiglu",
                     mlp_ratio=2.66667 * 2, reg_tokens=4, no_embed_class=True)
# [?] mlp_ratio 4 is timm's default for vit_base_patch14_reg4_dinov2; a different hidden size in the real
# weights fails the strict load with the tensor named
H0_MINI = ViTConfig(embed_dim=768, depth=12, num_heads=12, patch_size=14, init_values=1e-5, ffn="swiglu",
                    mlp_ratio=4.0, reg_tokens=4, no_embed_class=True)

_PREPROCESS = Preprocess(input_size=224, interpolation="bicubic", mean=(0.707223, 0.578729, 0.703617),
                         std=(0.211883, 0.230117, 0.177517), norm_name="h-optimus")
_FP16_BASIS = "authors: the {} model card runs it under torch.autocast(cuda, float16)"


def _timm_layout(cfg: ViTConfig):
    def convert(ckpt):
        sd, fmt = unwrap_timm_state_dict(ckpt)
        return fit_pos_embed(sd, cfg, antialias=True), fmt  # timm resamples with antialiasing

    return convert


for _name, _repo, _licence, _gated in (
    ("h-optimus-0", "bioptimus/H-optimus-0", "Apache-2.0", False),
    ("h-optimus-1", "bioptimus/H-optimus-1", "non-commercial research licence of the model card", True),
):
    register_encoder(
        EncoderSpec(
            name=_name,
            architecture="ViT-g/14 (1536 wide, 40 blocks, 24 heads), SwiGLU, 4 registers, LayerScale, 224 px",
            build=lambda: build_vit(HOPTIMUS),
            convert_state_dict=_timm_layout(HOPTIMUS),
            forward_tokens=vit_cls_tokens,
            embed_dim=1536,
            token_dim=1536,
            patch_size=14,
            num_prefix_tokens=5,
            pooling="cls",
            preprocess=_PREPROCESS,
            weights=WeightSource(env_var=f"{_name.upper().replace('-', '_')}_WEIGHTS", hf_repo=_repo,
                                 hf_filename="pytorch_model.bin", license=_licence, gated=_gated),
            tile_recipe="trident-112um",
            tile_fov_um=112.0,
            half_precision_ok=frozenset({"fp16"}),
            half_precision_basis=_FP16_BASIS.format(_repo),
            description=f"{_name}: 1536-d CLS, own mean/std",
            reference=f"Saillard et al. 2024; {_repo} model card",
        )
    )

register_encoder(
    EncoderSpec(
        name="h0-mini",
        architecture="ViT-B/14 (768 wide, 12 blocks), SwiGLU, 4 registers, LayerScale, 224 px",
        build=lambda: build_vit(H0_MINI),
        convert_state_dict=_timm_layout(H0_MINI),
        forward_tokens=vit_cls_mean_tokens,
        embed_dim=1536,
        token_dim=768,
        patch_size=14,
        num_prefix_tokens=5,
        pooling="cls+mean",
        preprocess=_PREPROCESS,
        weights=WeightSource(env_var="H0_MINI_WEIGHTS", hf_repo="bioptimus/H0-mini", hf_filename="pytorch_model.bin",
                             license="CC-BY-NC-ND-4.0", gated=True),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        half_precision_ok=frozenset({"fp16"}),
        half_precision_basis=_FP16_BASIS.format("bioptimus/H0-mini"),
        description="H0-mini: CLS ⊕ mean(patch tokens), 1536-d (the model card's recommended feature)",
        reference="Filiot et al. 2025 (distillation of H-optimus-0); bioptimus/H0-mini model card",
    )
)
