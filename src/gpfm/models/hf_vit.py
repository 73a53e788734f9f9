"""Key mappings from Hugging Face ``transformers`` ViT/DINOv2 layouts to timm's (stacked qkv).

Explicit tables, not heuristics: every source key is either mapped or rejected with its name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from gpfm.models.checkpoints import CheckpointError

# Legacy (transformers 4.x, the layout of the released checkpoints) and transformers 5.x names both map.
_VIT_LAYER = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_DINOV2_LAYER = {
    "norm1": "norm1",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.weights_in": "mlp.fc1",  # SwiGLU FFN (ViT-g, Hibou): [x1 | x2] packed in one matrix, as timm's SwiGLUPacked
    "mlp.weights_out": "mlp.fc2",
    "mlp.down_proj": "mlp.fc2",  # transformers 5 splits weights_in into gate_proj | up_proj (stacked back below)
}
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.register_tokens": "reg_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_DROP = ("pooler.", "embeddings.mask_token")


def _strip(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        ckpt = ckpt["state_dict"]
    out = {}
    for key, value in ckpt.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("vit.", "dinov2.", "model."):
            key = key.removeprefix(prefix)
        out[key] = value.float() if value.is_floating_point() else value
    return out


def hf_to_timm(ckpt: Mapping[str, Any], layer_map: Mapping[str, str], fmt: str) -> tuple[dict[str, torch.Tensor], str]:
    """Convert an HF ``ViTModel``/``Dinov2Model`` state dict to timm keys, stacking q, k, v into qkv.

    The untrained tanh pooler and the mask token (training-only) are dropped on purpose.
    """
    sd = _strip(ckpt)
    if any(k.startswith("blocks.") for k in sd):  # already timm layout
        return sd, "timm"
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    glu: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.startswith(_DROP):
            continue
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        m = re.match(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias|lambda1)$", key)
        if m is None:
            raise CheckpointError(f"unexpected key {key!r} in a Hugging Face ViT checkpoint")
        layer, name, kind = int(m.group(1)), m.group(2), m.group(3)
        gm = re.match(r"^mlp\.(gate|up)_proj$", name)
        if gm:
            glu.setdefault((layer, kind), {})[gm.group(1)] = value
            continue
        qm = re.match(r"^attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)$", name)
        if qm:
            part = qm.group(1) or {"q": "query", "k": "key", "v": "value"}[qm.group(2)]
            qkv.setdefault((layer, kind), {})[part] = value
            continue
        full = f"{name}.{kind}" if kind == "lambda1" else name
        target = layer_map.get(full)
        if target is None:
            raise CheckpointError(f"unmapped key {key!r} in a Hugging Face ViT checkpoint")
        out[f"blocks.{layer}.{target}" + ("" if kind == "lambda1" else f".{kind}")] = value
    out.update(stack_parts(qkv, ("query", "key", "value"), "attn.qkv", "q/k/v"))
    out.update(stack_parts(glu, ("gate", "up"), "mlp.fc1", "SwiGLU"))  # silu(gate) * up, as timm's packed fc1
    if "reg_token" in out:
        out = fold_cls_position(out)
    return out, fmt


def stack_parts(groups: Mapping[tuple[int, str], Mapping[str, torch.Tensor]], order: tuple[str, ...], target: str,
                what: str) -> dict[str, torch.Tensor]:
    """Concatenate per-layer projections split in the source (``order`` along dim 0) into ``blocks.N.<target>``.

    ``groups`` maps ``(layer, weight|bias)`` to the parts found; an incomplete set names the layer.
    """
    out = {}
    for (layer, kind), parts in groups.items():
        if set(parts) != set(order):
            raise CheckpointError(f"layer {layer}: incomplete {what} {kind} tensors ({sorted(parts)})")
        out[f"blocks.{layer}.{target}.{kind}"] = torch.cat([parts[p] for p in order], dim=0)
    return out


def fold_cls_position(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DINOv2 with registers → timm ``no_embed_class``: the CLS position embedding is added to the CLS token.

    DINOv2 adds ``pos_embed[:, 0]`` to CLS before inserting the registers (which get none); timm's register
    layout adds position embeddings to patches only. ``cls + pos[0]`` is a constant, so folding it is exact.
    """
    out = dict(sd)
    pos = out["pos_embed"]
    out["cls_token"] = out["cls_token"] + pos[:, :1]
    out["pos_embed"] = pos[:, 1:]
    return out


def hf_vit_to_timm(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """HF ``ViTModel`` (e.g. Phikon) → timm."""
    return hf_to_timm(ckpt, _VIT_LAYER, "hf-vit")


def hf_dinov2_to_timm(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """HF ``Dinov2Model`` (e.g. Phikon-v2) → timm."""
    return hf_to_timm(ckpt, _DINOV2_LAYER, "hf-dinov2")


def timm_to_hf_vit(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hf_vit_to_timm`, in the legacy layout of the released Phikon checkpoint."""
    inv_top = {v: k for k, v in _TOP.items()}
    inv_layer = {v: k for k, v in _VIT_LAYER.items() if "_proj" not in k and not k.startswith("mlp.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in inv_top:
            out[inv_top[key]] = value
            continue
        m = re.match(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m is None:
            raise KeyError(key)
        layer, name, kind = m.groups()
        if name == "attn.qkv":
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"encoder.layer.{layer}.attention.attention.{part}.{kind}"] = chunk
        else:
            out[f"encoder.layer.{layer}.{inv_layer[name]}.{kind}"] = value
    return out
