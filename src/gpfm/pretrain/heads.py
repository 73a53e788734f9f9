"""Projection heads of UNKD pretraining: the DINO/iBOT prototype head and the per-expert distillation heads.

Both follow DINOv2's head shape: an MLP to a small bottleneck, an L2
normalisation, and a weight-normalised linear layer without bias whose gain g is initialised to 1. Because the
bottleneck output has unit norm, every output element is bounded: |out_j| = |g_j · cos(v_j, x̂)| ≤ |g_j|.

The weight-normalised layer is always the attribute ``last_layer``, so its parameters are named
``...last_layer.parametrizations.weight.original0`` (the gain g, shape (out_dim, 1)) and ``...original1`` (the
direction v). The training loop's "freeze last layer" rule (LR 0 for names containing ``last_layer``) and its
optimizer groups rely on these names.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

DistillHeadKind = Literal["shared_dinohead_1layer", "separate_mlp"]


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    # fp16 cannot represent 1e-12; DINOv2 uses 1e-6 there for the same reason.
    eps = 1e-6 if x.dtype == torch.float16 else 1e-12
    return F.normalize(x, dim=-1, p=2, eps=eps)


def _init_linear(module: nn.Module) -> None:
    # DINOv2 head init: truncated normal std 0.02, zero bias.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def weight_normed_last_layer(in_dim: int, out_dim: int) -> nn.Linear:
    """A bias-free ``Linear(in_dim, out_dim)`` under weight normalisation (dim 0) with every gain g_j = 1.

    Implemented with :func:`torch.nn.utils.parametrizations.weight_norm`, so the effective weight row j is
    ``g_j · v_j / ‖v_j‖``; g is ``parametrizations.weight.original0`` and v is ``...original1``.
    """
    layer = nn.Linear(in_dim, out_dim, bias=False)
    _init_linear(layer)
    layer = weight_norm(layer, name="weight", dim=0)
    with torch.no_grad():
        layer.parametrizations.weight.original0.fill_(1.0)
    return layer


def head_gains(module: nn.Module) -> torch.Tensor | None:
    """The gains g of a head's weight-normalised ``last_layer`` as a flat (out_dim,) tensor, else None.

    Used for the scale diagnostics of (mean and max gain). ``separate_mlp`` heads have no gains.
    """
    last = getattr(module, "last_layer", None)
    if last is None or not hasattr(last, "parametrizations"):
        return None
    return last.parametrizations.weight.original0.detach().reshape(-1)


class DINOHead(nn.Module):
    """DINO/iBOT prototype head: MLP (GELU) → L2-normalise → weight-normalised Linear to ``out_dim`` logits.

    Shapes: ``(..., in_dim) → (..., out_dim)``. With ``nlayers=3`` (GPFM release) the MLP is
    in_dim→hidden_dim→hidden_dim→bottleneck_dim with GELU between layers (not after the last); with
    ``nlayers=1`` it is a single Linear in_dim→bottleneck_dim. One head is shared by the DINO (CLS) and iBOT
    (masked patch) losses in the release configuration.

    Args:
        in_dim: backbone width (1024 for ViT-L).
        out_dim: number of prototypes K (65,536 in the release).
        hidden_dim: MLP hidden width.
        bottleneck_dim: width of the L2-normalised bottleneck.
        nlayers: MLP depth (≥ 1).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"DINOHead nlayers must be >= 1, got {nlayers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear)
        self.last_layer = weight_normed_last_layer(bottleneck_dim, out_dim)
        self.in_dim, self.out_dim, self.bottleneck_dim = in_dim, out_dim, bottleneck_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prototype logits ``(..., out_dim)`` of backbone features ``(..., in_dim)``."""
        return self.last_layer(_l2_normalize(self.mlp(x)))


class _MLPAdapter(nn.Module):
    """Linear–GELU–Linear adapter without bottleneck normalisation (RADIO/UNIC style, switch #6)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.last_layer = nn.Linear(hidden_dim, out_dim)
        self.apply(_init_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.act(self.fc1(x)))


class DistillHead(nn.Module):
    """Maps student tokens into one expert's feature space (h_e of).

    ``kind="shared_dinohead_1layer"`` [F]: Linear(in_dim→bottleneck_dim, bias) → L2-normalise →
    weight-normalised Linear(bottleneck_dim→out_dim, no bias, gain 1) as ``last_layer``; the same head maps
    CLS and patch tokens (``which`` is accepted and ignored). Output elements are bounded by the gains.

    ``kind="separate_mlp"`` [I, switch #6]: two independent Linear–GELU–Linear adapters (hidden width
    ``hidden_dim``, default ``in_dim``), one for ``which="cls"`` and one for ``which="patch"``; no
    normalisation and no bound. Their output layers are also named ``last_layer`` (``cls_head.last_layer``,
    ``patch_head.last_layer``) so the freeze rule applies uniformly.

    Args:
        in_dim: student width.
        out_dim: the expert's target width D_e (UNI 1024, Phikon 768, CONCH 512).
        bottleneck_dim: bottleneck width of the faithful head.
        kind: head variant.
        hidden_dim: hidden width of the ``separate_mlp`` adapters (ignored otherwise).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bottleneck_dim: int = 256,
        kind: DistillHeadKind = "shared_dinohead_1layer",
        *,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.in_dim, self.out_dim = in_dim, out_dim
        if kind == "shared_dinohead_1layer":
            self.proj = nn.Linear(in_dim, bottleneck_dim)
            _init_linear(self.proj)
            self.last_layer = weight_normed_last_layer(bottleneck_dim, out_dim)
        elif kind == "separate_mlp":
            hidden = hidden_dim or in_dim
            self.cls_head = _MLPAdapter(in_dim, hidden, out_dim)
            self.patch_head = _MLPAdapter(in_dim, hidden, out_dim)
        else:
            raise ValueError(
                f"unknown distill head kind {kind!r}; use 'shared_dinohead_1layer' or 'separate_mlp'"
            )

    def forward(self, x: torch.Tensor, which: Literal["cls", "patch"] = "cls") -> torch.Tensor:
        """Project ``(..., in_dim)`` student tokens to ``(..., out_dim)``.

        Args:
            x: student CLS (B, in_dim) or patch tokens (B, N, in_dim), after the final norm.
            which: ``cls`` or ``patch``; selects the adapter for ``separate_mlp``.
        """
        if which not in ("cls", "patch"):
            raise ValueError(f"which must be 'cls' or 'patch', got {which!r}")
        if self.kind == "separate_mlp":
            return (self.cls_head if which == "cls" else self.patch_head)(x)
        return self.last_layer(_l2_normalize(self.proj(x)))
