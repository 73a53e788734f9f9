"""PLIP (Huang et al., Nature Medicine 2023): the image tower of a CLIP ViT-B/32 fine-tuned on OpenPath.

Reference definition: Hugging Face ``CLIPModel`` (``vinid/plip``); GPFM's baseline feature is
``get_image_features`` — the final-LayerNorm CLS projected by ``visual_projection`` (768→512, no bias), not
L2-normalised. The tower here is timm's ``vit_base_patch32_clip_quickgelu_224`` (pre-norm, QuickGELU,
LayerNorm eps 1e-5), whose head holds the projection (its bias fixed at zero). Keys are mapped explicitly;
the text tower and ``logit_scale`` are dropped by name.

Outputs: ``pooled`` = the 512-d projected embedding; ``cls`` = the 768-d post-LayerNorm CLS (HF's
``pooler_output``); ``patch`` = the 7×7 patch tokens after the same LayerNorm (HF leaves them un-normed in
``last_hidden_state``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gpfm.models.catalog import register_encoder
from gpfm.models.checkpoints import CheckpointError
from gpfm.models.hf_vit import stack_parts
from gpfm.models.spec import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, EncoderSpec, Preprocess, TokenOutput, WeightSource


def build_plip() -> nn.Module:
    """The CLIP ViT-B/32 image tower of timm with a 512-d projection head (random weights)."""
    import timm

    return timm.create_model("vit_base_patch32_clip_quickgelu_224", pretrained=False, num_classes=512)


def plip_tokens(model: nn.Module, images: torch.Tensor) -> TokenOutput:
    """Final-norm tokens → CLS (768), patches (7×7×768) and the projected CLS (512)."""
    tokens = model.forward_features(images)
    cls = tokens[:, 0]
    grid = (images.shape[-2] // 32, images.shape[-1] // 32)
    return TokenOutput(cls=cls, patch=tokens[:, 1:], grid=grid, pooled=model.head(cls))


_LAYER = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.out_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_TOP = {
    "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "pre_layrnorm.weight": "norm_pre.weight",  # sic: the transformers attribute name
    "pre_layrnorm.bias": "norm_pre.bias",
    "post_layernorm.weight": "norm.weight",
    "post_layernorm.bias": "norm.bias",
}


def hf_clip_to_timm(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Hugging Face ``CLIPModel``/``CLIPVisionModelWithProjection`` → timm CLIP ViT keys (q, k, v stacked)."""
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        ckpt = ckpt["state_dict"]
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in ckpt.items():
        if not isinstance(value, torch.Tensor) or key.startswith(("text_model.", "text_projection.")):
            continue
        if key in ("logit_scale", "vision_model.embeddings.position_ids"):
            continue
        value = value.float()
        if key == "visual_projection.weight":
            out["head.weight"] = value
            out["head.bias"] = torch.zeros(value.shape[0])
            continue
        if not key.startswith("vision_model."):
            raise CheckpointError(f"unexpected key {key!r} in a CLIP checkpoint")
        key = key.removeprefix("vision_model.")
        if key == "embeddings.class_embedding":
            out["cls_token"] = value.reshape(1, 1, -1)
        elif key == "embeddings.position_embedding.weight":
            out["pos_embed"] = value.unsqueeze(0)
        elif key in _TOP:
            out[_TOP[key]] = value
        else:
            m = re.match(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
            if m is None:
                raise CheckpointError(f"unmapped key {key!r} in a CLIP vision tower")
            layer, name, kind = int(m.group(1)), m.group(2), m.group(3)
            part = re.match(r"^self_attn\.(q|k|v)_proj$", name)
            if part:
                qkv.setdefault((layer, kind), {})[part.group(1)] = value
            elif name in _LAYER:
                out[f"blocks.{layer}.{_LAYER[name]}.{kind}"] = value
            else:
                raise CheckpointError(f"unmapped key {key!r} in a CLIP vision tower")
    out.update(stack_parts(qkv, ("q", "k", "v"), "attn.qkv", "q/k/v"))
    if "head.weight" not in out:
        raise CheckpointError("no visual_projection.weight: PLIP's embedding is the projected CLS; pass the full "
                              "CLIPModel checkpoint (pytorch_model.bin of vinid/plip)")
    return out, "hf-clip"


register_encoder(
    EncoderSpec(
        name="plip",
        architecture="CLIP ViT-B/32 image tower (768 wide, 12 blocks, pre-norm, QuickGELU) + 512-d projection",
        build=build_plip,
        convert_state_dict=hf_clip_to_timm,
        forward_tokens=plip_tokens,
        embed_dim=512,
        token_dim=768,
        patch_size=32,
        num_prefix_tokens=1,
        pooling="contrastive",
        # CLIPProcessor: shorter side to 224 (bicubic), centre crop 224, OpenAI CLIP mean/std
        preprocess=Preprocess(input_size=224, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, interpolation="bicubic",
                              resize="shorter_then_center_crop", resize_to=224, norm_name="openai_clip"),
        weights=WeightSource(env_var="PLIP_WEIGHTS", hf_repo="vinid/plip", hf_filename="pytorch_model.bin",
                             license="MIT (code); weights for research use (model card)"),
        tile_recipe="trident-112um",
        tile_fov_um=112.0,
        description="PLIP image embedding (a GPFM baseline): 512-d projected CLS",
        reference="Huang et al., Nature Medicine 2023; vinid/plip",
    )
)
