"""GPFM (Ma et al., Nat. Biomed. Eng. 2025): ViT-L/14, MLP FFN, LayerScale 1e-5, no registers, final-norm CLS.

Both circulating ``GPFM.pth`` layouts load (detected automatically): the DINOv2 teacher checkpoint of the
GitHub release (format A) and the timm state dict on the Hugging Face hub (format B).
"""

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import FORMAT_A, gpfm_to_timm
from gpfm.models.spec import EncoderSpec, Preprocess, WeightSource
from gpfm.models.vit import GPFM_VITL14, build_vit, vit_cls_tokens

GPFM = register_encoder(
    EncoderSpec(
        name="gpfm",
        architecture="ViT-L/14 (1024 wide, 24 blocks, 16 heads), GELU MLP, LayerScale 1e-5, no registers, 224 px",
        build=lambda: build_vit(GPFM_VITL14),
        convert_state_dict=gpfm_to_timm,
        forward_tokens=vit_cls_tokens,
        embed_dim=1024,
        token_dim=1024,
        patch_size=14,
        num_prefix_tokens=1,
        pooling="cls",
        preprocess=Preprocess(input_size=224, interpolation="bicubic", resize="direct", norm_name="imagenet"),
        weights=WeightSource(
            env_var="GPFM_WEIGHTS",
            hf_repo="majiabo/GPFM",
            hf_filename="GPFM.pth",
            url="https://github.com/birkhoffkiki/GPFM/releases/download/ckpt/GPFM.pth",
            # MD5 published by kaiko-ai/eva for the GitHub release asset (format A); no SHA-256 is published.
            pinned=((FORMAT_A, "md5", "0dc7e345de84f385d09c8c782b4b3236"),),
            license="non-commercial (CC-BY-NC-4.0 on the model card; sources disagree); never redistribute",
        ),
        tile_recipe="gpfm-128um",
        tile_fov_um=128.0,
        description="GPFM tile encoder: UNKD-distilled from UNI, Phikon and CONCH; 1024-d final-norm CLS",
        reference="Ma et al., Nature Biomedical Engineering 2025; arXiv:2407.18449",
    )
)
