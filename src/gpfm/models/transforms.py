"""Preprocessing: tile (PIL image or uint8 tensor) → normalised model input.

Two paths that agree to within resampling noise: a PIL path for image files and a tensor path (antialiased
bicubic ``F.interpolate``) for tiles cut from slides, which can run batched on the GPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gpfm.models.spec import Preprocess

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an RGB image; transparent pixels are composited onto white (never black)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


class PilTransform:
    """Callable PIL image → (3, S, S) float tensor, following a :class:`Preprocess` recipe."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess
        self._mean = torch.tensor(preprocess.mean).view(3, 1, 1)
        self._std = torch.tensor(preprocess.std).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Resize (antialiased), convert to [0, 1] and normalise one image."""
        p = self.preprocess
        image = to_rgb(image)
        filt = _PIL_FILTERS[p.interpolation]
        if p.resize == "direct":
            if image.size != (p.input_size, p.input_size):
                image = image.resize((p.input_size, p.input_size), filt)  # PIL downscaling is antialiased
        else:
            short = p.resize_to or p.input_size
            w, h = image.size
            scale = short / min(w, h)
            image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), filt)
            w, h = image.size
            left, top = (w - p.input_size) // 2, (h - p.input_size) // 2
            image = image.crop((left, top, left + p.input_size, top + p.input_size))
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        return (x - self._mean) / self._std

    def __repr__(self) -> str:
        return f"PilTransform({self.preprocess.to_dict()})"


def preprocess_uint8_batch(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Resize (antialiased) and normalise a uint8 batch, on whatever device it lives.

    Args:
        batch: (B, H, W, 3) or (B, 3, H, W) uint8 tiles.
        preprocess: the encoder's recipe (``direct`` resize only; tiles are already square).

    Returns:
        (B, 3, S, S) float32 normalised tensor.
    """
    if batch.ndim != 4:
        raise ValueError(f"expected a 4-D uint8 batch, got shape {tuple(batch.shape)}")
    if batch.shape[-1] == 3 and batch.shape[1] != 3:
        batch = batch.permute(0, 3, 1, 2)
    x = batch.float().div_(255.0)
    s = preprocess.input_size
    if preprocess.resize != "direct":
        raise ValueError("the tensor path supports only the 'direct' resize recipe")
    if x.shape[-2:] != (s, s):
        x = F.interpolate(x, size=(s, s), mode=preprocess.interpolation, antialias=True, align_corners=False)
        x = x.clamp_(0.0, 1.0)
    mean = torch.tensor(preprocess.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
