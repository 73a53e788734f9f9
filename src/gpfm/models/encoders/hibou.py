"""Hibou-B and Hibou-L (HistAI, Nechaev et al. 2024): DINOv2 ViTs with 4 registers and a SwiGLU FFN.

Reference definition: HistAI/hibou ``build_model`` (Apache-2.0; ``vit_base``/``vit_large``, patch 14,
``num_register_tokens=4``, ``ffn_layer="swiglufused"``, LayerScale 1e-5, 224 px) and its Hugging Face port
(``trust_remote_code``: transformers' Dinov2 plus registers — the layout of the released weights, the same as
transformers' ``Dinov2WithRegistersModel``). Feature: the final-LayerNorm CLS (``pooler_output``). The fused
SwiGLU hidden width is DINOv2's ``(int(4·d·2/3) + 7) // 8 * 8`` (2048 for B, 2736 for L).
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.hf_vit import hf_dinov2_to_timm
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import ViTConfig, build_vit, fit_pos_embed, vit_cls_tokens


def _swiglu_ratio(width: int) -> float:
    hidden = (int(width * 4 * 2 / 3) + 7) // 8 * 8
    return (2 * hidden + 0.01) / width  # packed [x1 | x2]; +0.01 keeps int(width * ratio) exact


def hibou_config(width: int, depth: int, heads: int) -> ViTConfig:
    """The Hibou ViT of a given size."""
    return ViTConfig(embed_dim=width, depth=depth, num_heads=heads, patch_size=14, init_values=1e-5, ffn="swiglu",
                     mlp_ratio=_swiglu_ratio(width), reg_tokens=4, no_embed_class=True)


for _name, _cfg, _repo, _gated in (("hibou-b", hibou_config(768, 12, 12), "histai/hibou-b", False),
                                   ("hibou-l", hibou_config(1024, 24, 16), "histai/hibou-L", True)):

    def _convert(ckpt, cfg=_cfg):
        sd, fmt = hf_dinov2_to_timm(ckpt)
        return fit_pos_embed(sd, cfg, antialias=False), fmt  # transformers' Dinov2 resamples without antialias

    register_encoder(
        EncoderSpec(
            name=_name,
            architecture=f"DINOv2 ViT-{_name[-1].upper()}/14 ({_cfg.embed_dim} wide, {_cfg.depth} blocks), SwiGLU, "
                         "4 registers, LayerScale, 224 px (HF Dinov2-with-registers layout)",
            build=(lambda c=_cfg: build_vit(c)),
            convert_state_dict=_convert,
            forward_tokens=vit_cls_tokens,
            embed_dim=_cfg.embed_dim,
            token_dim=_cfg.embed_dim,
            patch_size=14,
            num_prefix_tokens=5,
            pooling="cls",
            preprocess=Preprocess(input_size=224, interpolation="bicubic", mean=(0.7068, 0.5755, 0.722),
                                  std=(0.195, 0.2316, 0.1816), norm_name="hibou"),
            weights=WeightSource(env_var=f"{_name.upper().replace('-', '_')}_WEIGHTS", hf_repo=_repo,
                                 hf_filename="model.safetensors", license="Apache-2.0", gated=_gated),
            tile_recipe="trident-112um",
            tile_fov_um=112.0,
            description=f"{_name}: {_cfg.embed_dim}-d final-norm CLS",
            reference=f"Nechaev et al. 2024 (arXiv 2406.05074); {_repo}",
        )
    )
