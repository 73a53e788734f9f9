"""Encoders: the registry, checkpoint handling and weight resolution.

Example:
    >>> from gpfm.models import create_encoder, list_encoders
    >>> enc = create_encoder("efficientnet-lite0-imagenet", device="cpu")
    >>> enc.embed(enc.transform(img).unsqueeze(0)).shape  # doctest: +SKIP
    torch.Size([1, 1280])
"""

from gpfm.models.catalog import ENCODERS, PAPER_COMPARISON, get_encoder_spec, list_encoders, register_encoder
from gpfm.models.checkpoints import CheckpointError, detect_gpfm_format, gpfm_to_timm, timm_to_gpfm_teacher
from gpfm.models.encoder import Encoder
from gpfm.models.factory import create_encoder
from gpfm.models.spec import EncoderSpec, Preprocess, TokenOutput, WeightSource
from gpfm.models.vit import ViT, ViTConfig, build_vit
from gpfm.models.weights import WeightsNotFoundError, resolve_weights

__all__ = [
    "ENCODERS",
    "PAPER_COMPARISON",
    "CheckpointError",
    "Encoder",
    "EncoderSpec",
    "Preprocess",
    "TokenOutput",
    "ViT",
    "ViTConfig",
    "WeightSource",
    "WeightsNotFoundError",
    "build_vit",
    "create_encoder",
    "detect_gpfm_format",
    "get_encoder_spec",
    "gpfm_to_timm",
    "list_encoders",
    "register_encoder",
    "resolve_weights",
    "timm_to_gpfm_teacher",
]
