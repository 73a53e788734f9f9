"""AdamW parameter groups, per-iteration hyper-parameters and per-module gradient clipping.

Per parameter (name as seen from the student container: ``backbone.*``, ``dino_head.*``, ``distill_heads.*``):

* weight-decay multiplier 0 for biases, any name containing ``norm``, and LayerScale gammas (``gamma``);
  1 otherwise;
* layer-wise LR multiplier ``d^(L+1−l)`` with ``d = layerwise_decay`` and ``L`` blocks, where ``l = i+1`` for
  ``blocks.i``, ``l = 0`` for ``cls_token``/``pos_embed``/``patch_embed``/``mask_token``/``reg_token`` and
  ``l = L+1`` (multiplier 1) for the final norm and every head; ``patch_embed`` is further × 0.2;
* ``last_layer`` parameters follow the last-layer LR schedule (0 during the freeze window).

Parameters sharing (lr multiplier, wd multiplier, last-layer flag) are merged into one AdamW group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from gpfm.pretrain.config import OptimConfig

_EMBED_NAMES = ("cls_token", "pos_embed", "patch_embed", "mask_token", "reg_token")


@dataclass(frozen=True)
class ParamRule:
    """Multipliers of one parameter.

    Attributes:
        lr_mult: layer-wise LR multiplier.
        wd_mult: weight-decay multiplier (0 or 1).
        is_last_layer: follows the last-layer LR schedule.
    """

    lr_mult: float
    wd_mult: float
    is_last_layer: bool


def param_rule(name: str, num_layers: int, layerwise_decay: float, patch_embed_lr_mult: float) -> ParamRule:
    """The multipliers of the parameter called ``name`` (see the module docstring)."""
    wd_mult = 0.0 if (name.endswith(".bias") or "norm" in name or "gamma" in name) else 1.0
    layer_id = num_layers + 1
    if name.startswith("backbone."):
        local = name.removeprefix("backbone.")
        if local.startswith(_EMBED_NAMES):
            layer_id = 0
        elif local.startswith("blocks."):
            layer_id = int(local.split(".")[1]) + 1
    lr_mult = layerwise_decay ** (num_layers + 1 - layer_id)
    if name.startswith("backbone.patch_embed"):
        lr_mult *= patch_embed_lr_mult
    return ParamRule(lr_mult, wd_mult, "last_layer" in name)


def build_param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], num_layers: int, cfg: OptimConfig
) -> list[dict]:
    """AdamW groups with ``lr_mult``, ``wd_mult``, ``is_last_layer`` and the member ``names`` recorded.

    Args:
        named_params: trainable parameters of the student container (frozen ones are skipped).
        num_layers: number of backbone blocks L.
        cfg: optimiser config (layer decay, patch-embed factor).
    """
    groups: dict[ParamRule, dict] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        rule = param_rule(name, num_layers, cfg.layerwise_decay, cfg.patch_embed_lr_mult)
        group = groups.setdefault(
            rule,
            {
                "params": [],
                "names": [],
                "lr_mult": rule.lr_mult,
                "wd_mult": rule.wd_mult,
                "is_last_layer": rule.is_last_layer,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    # a stable order (by first parameter name) so optimizer state dicts line up across runs and ranks
    return sorted(groups.values(), key=lambda g: g["names"][0])


def build_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``groups``; LR and WD are set every iteration by :func:`apply_hyperparameters`."""
    return torch.optim.AdamW(groups, lr=0.0, betas=cfg.betas, eps=cfg.eps, weight_decay=0.0)


def apply_hyperparameters(
    optimizer: torch.optim.Optimizer, lr: float, last_layer_lr: float, wd: float
) -> None:
    """Set each group's LR/WD for this iteration from the schedules and its multipliers."""
    for group in optimizer.param_groups:
        group["lr"] = (last_layer_lr if group["is_last_layer"] else lr) * group["lr_mult"]
        group["weight_decay"] = wd * group["wd_mult"]


def clip_gradients(modules: dict[str, nn.Module], max_norm: float) -> dict[str, float]:
    """Clip each module's gradients to global norm ``max_norm`` separately; return the pre-clip norms.

    With ``max_norm <= 0`` nothing is clipped and the norms are still measured (for logging).
    """
    norms: dict[str, float] = {}
    for name, module in modules.items():
        params = [p for p in module.parameters() if p.grad is not None]
        if not params:
            continue
        limit = max_norm if max_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, limit)
        if hasattr(norm, "full_tensor"):  # FSDP2 DTensor gradients: the norm is sharded too
            norm = norm.full_tensor()
        norms[name] = float(norm)
    return norms
