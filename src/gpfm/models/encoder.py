"""The :class:`Encoder`: a built, weight-loaded model together with everything needed to use it right."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gpfm.models.spec import EncoderSpec, TokenOutput
from gpfm.models.transforms import PilTransform, preprocess_uint8_batch
from gpfm.runtime import autocast


class Encoder(nn.Module):
    """A tile encoder as returned by :func:`gpfm.models.create_encoder`.

    Attributes:
        spec: the registry entry (architecture, preprocessing, pooling, weight source).
        model: the underlying ``nn.Module`` (eval mode).
        transform: PIL image → normalised (3, S, S) tensor.
        device: where the model lives.
        precision: ``fp32``, ``bf16`` or ``fp16``; used as autocast dtype by :meth:`embed`.
        weights_sha256: SHA-256 of the loaded weights file, or ``"random"``.
        weights_path: the file the weights came from (None for random weights).
        checkpoint_format: detected checkpoint layout (e.g. ``dinov2-teacher`` or ``timm``).
    """

    def __init__(
        self,
        spec: EncoderSpec,
        model: nn.Module,
        *,
        device: torch.device,
        precision: str,
        weights_sha256: str,
        weights_path: str | None,
        checkpoint_format: str,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.model = model
        self.transform = PilTransform(spec.preprocess)
        self.device = device
        self.precision = precision
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.checkpoint_format = checkpoint_format
        # chosen per encoder by measurement (EncoderSpec.memory_format); weights now, every input in embed/tokens
        self.memory_format = torch.channels_last if spec.memory_format == "channels_last" else torch.contiguous_format
        if spec.memory_format == "channels_last":
            self.model.to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        """Registry name."""
        return self.spec.name

    @property
    def embed_dim(self) -> int:
        """Dimension of :meth:`embed` outputs."""
        return self.spec.embed_dim

    @property
    def patch_size(self) -> int | None:
        """ViT patch size (None for CNNs)."""
        return self.spec.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled embedding of preprocessed images (no autocast, gradients as the caller decides)."""
        return self.spec.forward_tokens(self.model, images).pooled

    def forward_tokens(self, images: torch.Tensor) -> TokenOutput:
        """CLS, patch tokens and pooled embedding of preprocessed images (no autocast)."""
        return self.spec.forward_tokens(self.model, images)

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The prescribed pooled embedding, in inference mode and this encoder's precision, as fp32.

        Args:
            images: (B, 3, S, S) normalised tensor (see :attr:`transform`); moved to :attr:`device`.
        """
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        with autocast(self.device, self.precision):
            out = self.spec.forward_tokens(self.model, images).pooled
        return out.float()

    @torch.inference_mode()
    def tokens(self, images: torch.Tensor) -> TokenOutput:
        """Token outputs in inference mode and this encoder's precision, cast to fp32."""
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        with autocast(self.device, self.precision):
            out = self.spec.forward_tokens(self.model, images)
        return TokenOutput(
            cls=out.cls.float(),
            patch=None if out.patch is None else out.patch.float(),
            grid=out.grid,
            pooled=out.pooled.float(),
        )

    def preprocess_uint8(self, batch: torch.Tensor) -> torch.Tensor:
        """Resize + normalise a uint8 (B, H, W, 3) batch on :attr:`device` (the slide-tile path)."""
        return preprocess_uint8_batch(batch.to(self.device, non_blocking=True), self.spec.preprocess)

    def metadata(self) -> dict[str, Any]:
        """What every output file records about the encoder."""
        import timm

        from gpfm import __version__

        return {
            "encoder": self.spec.name,
            "encoder_version": __version__,
            "weights_sha256": self.weights_sha256,
            "checkpoint_format": self.checkpoint_format,
            "pooling": self.spec.pooling,
            "dim": self.spec.embed_dim,
            "precision": self.precision,
            "memory_format": self.spec.memory_format,
            "transform": self.spec.preprocess.to_dict(),
            "tile_recipe": self.spec.tile_recipe,
            "is_pathology": self.spec.is_pathology,
            "torch_version": str(torch.__version__),
            "timm_version": str(timm.__version__),
        }

    def __repr__(self) -> str:
        return (f"Encoder(name={self.name}, dim={self.embed_dim}, precision={self.precision}, "
                f"device={self.device}, weights={self.weights_sha256[:12]}, format={self.checkpoint_format})")
