"""Typed records that describe an encoder as data: architecture, weights, preprocessing, outputs.

A registry entry is one :class:`EncoderSpec`; adding an encoder means writing one spec in one file under
``gpfm/models/encoders/``. Every fact that callers used to hard-code (mean/std, input size, pooling, tile
field of view, licence) is a named field here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from gpfm.weights import WeightSource  # noqa: F401 - re-exported: encoders declare their sources here

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

Pooling = Literal["cls", "cls+mean", "pooled", "contrastive"]


class TokenOutput(NamedTuple):
    """Token-level outputs of an encoder for one batch.

    Attributes:
        cls: (B, D) class token after the final norm (for CNNs: the pooled feature).
        patch: (B, N, D_tok) spatial tokens after the final norm, row-major over ``grid``; None for models
            without spatial tokens.
        grid: (h, w) of the patch tokens, or None.
        pooled: (B, E) the embedding the model's authors prescribe (what :meth:`Encoder.embed` returns).
    """

    cls: torch.Tensor
    patch: torch.Tensor | None
    grid: tuple[int, int] | None
    pooled: torch.Tensor


@dataclass(frozen=True)
class Preprocess:
    """How a tile becomes the model input.

    Attributes:
        input_size: model input side in px.
        mean: per-channel normalisation mean (on [0, 1] pixels).
        std: per-channel normalisation std.
        interpolation: resize filter; downscaling is always antialiased.
        resize: ``direct`` resizes the whole tile to ``input_size`` (no crop: the field of view is kept);
            ``shorter_then_center_crop`` resizes the shorter side to ``resize_to`` then centre-crops.
        resize_to: shorter-side size for ``shorter_then_center_crop``.
        norm_name: a readable name of the normalisation ("imagenet", "openai_clip", "half").
    """

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize: Literal["direct", "shorter_then_center_crop"] = "direct"
    resize_to: int | None = None
    norm_name: str = "imagenet"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, recorded in every output file."""
        return {**asdict(self), "antialias": True}


@dataclass(frozen=True)
class EncoderSpec:
    """Everything gpfm knows about one registered encoder.

    Attributes:
        name: registry name (``gpfm``, ``uni``, ...).
        architecture: human-readable architecture summary.
        build: returns the randomly initialised ``nn.Module`` (no download, no weights).
        convert_state_dict: maps a raw checkpoint dict to the module's state dict; returns
            ``(state_dict, checkpoint_format)``. Loading is always strict afterwards.
        forward_tokens: ``(module, images) -> TokenOutput`` for preprocessed images.
        embed_dim: dimension of the prescribed pooled embedding.
        token_dim: dimension of the patch tokens (None when the model has none).
        patch_size: ViT patch size in px (None for CNNs).
        num_prefix_tokens: CLS + register tokens (0 for CNNs). Never guessed by callers.
        pooling: what the pooled embedding is.
        preprocess: the model's input recipe.
        weights: where the weights come from.
        tile_recipe: recommended tiling recipe name (see ``gpfm.wsi``), e.g. ``gpfm-128um``.
        tile_fov_um: recommended tile field of view in µm.
        half_precision_ok: half dtypes this encoder defaults to where the hardware runs them natively. Empty
            (fp32 only) unless ``half_precision_basis`` names a parity result with the REAL weights (``gpfm models
            verify``: median cosine ≥ 0.9995 and 1st percentile ≥ 0.999 on real tiles) or the authors' own
            prescription; random-weight parity is never enough.
        half_precision_basis: where ``half_precision_ok`` comes from (required when it is not empty).
        memory_format: ``contiguous`` (NCHW) or ``channels_last`` (NHWC) for weights and inputs, chosen by
            measurement (``benchmarks/memory_format.py``) and applied by the encoder itself.
        memory_format_basis: the measurement behind a non-default ``memory_format``.
        is_pathology: False for generic ImageNet models (said plainly wherever they stand in for GPFM).
        description: one line for ``gpfm models``.
        reference: paper or model card.
    """

    name: str
    architecture: str
    build: Callable[[], nn.Module]
    convert_state_dict: Callable[[Mapping[str, Any]], tuple[dict[str, torch.Tensor], str]]
    forward_tokens: Callable[[nn.Module, torch.Tensor], TokenOutput]
    embed_dim: int
    token_dim: int | None
    patch_size: int | None
    num_prefix_tokens: int
    pooling: Pooling
    preprocess: Preprocess
    weights: WeightSource
    tile_recipe: str = "gpfm-128um"
    tile_fov_um: float = 128.0
    half_precision_ok: frozenset[str] = field(default_factory=frozenset)
    half_precision_basis: str = ""
    memory_format: Literal["contiguous", "channels_last"] = "contiguous"
    memory_format_basis: str = ""
    is_pathology: bool = True
    description: str = ""
    reference: str = ""

    def summary(self) -> dict[str, Any]:
        """The facts shown by ``gpfm models`` and recorded with results."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "embed_dim": self.embed_dim,
            "token_dim": self.token_dim,
            "patch_size": self.patch_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "pooling": self.pooling,
            "preprocess": self.preprocess.to_dict(),
            "tile_recipe": self.tile_recipe,
            "tile_fov_um": self.tile_fov_um,
            "weights_license": self.weights.license,
            "half_precision_ok": sorted(self.half_precision_ok),
            "half_precision_basis": self.half_precision_basis,
            "memory_format": self.memory_format,
            "gated": self.weights.gated,
            "is_pathology": self.is_pathology,
        }
