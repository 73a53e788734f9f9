"""Learned tissue segmenters, registered by name beside the threshold methods (``hsv``, ``otsu``, ``clam-tcga``).

Threshold methods fail on faint, fatty or heavily stained tissue and on debris, which is why the field's tools
default to learned segmenters (TRIDENT and LazySlide: HEST's DeepLabV3). A learned segmenter here is data — an
architecture built from torchvision, a checkpoint converter, the µm/px and window size it was trained at, its
normalisation and its weight source — and runs through the same offline-first weight resolution as the encoders
(path → ``$<ENV>`` → ``~/.cache/gpfm/weights/<name>.*`` → hub cache → hub download when online; one clear error
offline). The default tissue method stays ``hsv``, which needs no download.

Inference: the slide is read at the model's µm/px (``read_scaled``, never a full-resolution plane), cut into
``input_px`` windows with ``overlap_px`` overlap (padded with white at the edges), each window is normalised and
segmented, and the centre of each window's prediction is stitched into one mask, which then goes through the same
polygon extraction and area filters as the threshold methods.

Registered:

* ``deeplabv3-hest`` — DeepLabV3 with a ResNet-50 backbone and a 2-class head (tissue = class 1), the HEST-1k
  tissue segmenter (Jaume et al., NeurIPS 2024 Datasets & Benchmarks) that TRIDENT uses by default: 512 px windows
  at 1 µm/px (10×), ImageNet normalisation. Weights: Hugging Face ``MahmoodLab/hest-tissue-seg``,
  ``deeplabv3_seg_v4.ckpt`` (a Lightning checkpoint: ``state_dict`` with ``model.`` prefixes and an auxiliary
  head, which is dropped); licence: non-commercial research use (see the model card).
* ``deeplabv3-mobilenet`` — DeepLabV3 with a MobileNetV3-Large backbone, 2 classes, 512 px at 2 µm/px: a light
  architecture (11 M parameters) for segmenters a lab trains itself (``GPFM_SEG_MOBILENET_WEIGHTS``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gpfm.registry import Registry
from gpfm.weights import RANDOM, WeightSource, load_strict, read_checkpoint, resolve_weights

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TissueModelSpec:
    """A learned tissue segmenter.

    Attributes:
        name: registry name (the ``--seg-method`` value).
        build: returns the randomly initialised module; its forward returns ``{"out": logits (B, C, H, W)}``.
        convert_state_dict: raw checkpoint → the module's state dict (loaded strictly).
        seg_mpp: µm/px of the windows the model was trained on.
        input_px: window side in px.
        overlap_px: overlap between neighbouring windows (the outer half is discarded when stitching).
        tissue_class: output channel of tissue.
        mean, std: input normalisation (RGB in [0, 1]).
        weights: where the weights come from, and their licence.
        description: one line for listings.
    """

    name: str
    build: Callable[[], nn.Module]
    convert_state_dict: Callable[[Mapping[str, Any]], dict[str, torch.Tensor]]
    seg_mpp: float
    input_px: int
    overlap_px: int
    tissue_class: int
    weights: WeightSource
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""
    kind: str = "tissue segmenter"  # named in the missing-weights message
    cli_flag: str = "--seg-weights"


TISSUE_MODELS: Registry[TissueModelSpec] = Registry("tissue segmenter")


def _lightning_to_plain(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap ``state_dict``, strip ``model.``/``module.`` prefixes, drop the auxiliary head."""
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else ckpt
    out = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("model.").removeprefix("module.")
        if key.startswith("aux_classifier."):
            continue
        out[key] = value
    return out


def _deeplab_resnet50() -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_resnet50

    return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=2, aux_loss=False)


def _deeplab_mobilenet() -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2, aux_loss=False)


TISSUE_MODELS.register("deeplabv3-hest", TissueModelSpec(
    name="deeplabv3-hest", build=_deeplab_resnet50, convert_state_dict=_lightning_to_plain, seg_mpp=1.0,
    input_px=512, overlap_px=64, tissue_class=1,
    weights=WeightSource(env_var="GPFM_SEG_HEST_WEIGHTS", hf_repo="MahmoodLab/hest-tissue-seg",
                         hf_filename="deeplabv3_seg_v4.ckpt", license="non-commercial research (HEST model card)",
                         notes="These are the HEST-1k tissue segmentation weights TRIDENT uses by default."),
    description="DeepLabV3-ResNet50, HEST-1k tissue segmenter, 512 px at 1 µm/px",
))
TISSUE_MODELS.register("deeplabv3-mobilenet", TissueModelSpec(
    name="deeplabv3-mobilenet", build=_deeplab_mobilenet, convert_state_dict=_lightning_to_plain, seg_mpp=2.0,
    input_px=512, overlap_px=64, tissue_class=1,
    weights=WeightSource(env_var="GPFM_SEG_MOBILENET_WEIGHTS", license="yours",
                         notes="No public weights: train it on your own tissue masks and pass the file."),
    description="DeepLabV3-MobileNetV3-Large, 2 classes, 512 px at 2 µm/px (for self-trained weights)",
))


@dataclass
class LoadedTissueModel:
    """A built segmenter with its weights identity."""

    spec: TissueModelSpec
    model: nn.Module
    weights_sha256: str
    device: torch.device


def load_tissue_model(name: str, weights: str | None = None, device: str | None = None) -> LoadedTissueModel:
    """Build a registered segmenter and load its weights strictly (``weights="random"`` for tests/timing).

    Raises:
        WeightsNotFoundError: no weights offline (the message says where to get them).
        CheckpointError: a file that is not this model's checkpoint.
    """
    from gpfm.hashing import file_digest

    spec = TISSUE_MODELS.get(name)
    resolved = resolve_weights(spec, weights)
    model = spec.build()
    sha = RANDOM
    if resolved.path is not None:
        load_strict(model, spec.convert_state_dict(read_checkpoint(resolved.path)), source=str(resolved.path))
        sha = file_digest(resolved.path)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return LoadedTissueModel(spec, model.eval().requires_grad_(False).to(dev), sha, dev)


def weights_identity(name: str, weights: str | None = None) -> str:
    """SHA-256 of the segmenter's weights file (``random`` for random weights), without building the model."""
    from gpfm.hashing import file_digest

    resolved = resolve_weights(TISSUE_MODELS.get(name), weights)
    return RANDOM if resolved.path is None else file_digest(resolved.path)


def _windows(extent: int, size: int, step: int) -> list[int]:
    starts = list(range(0, max(1, extent - size) + 1, step))
    if starts[-1] + size < extent:
        starts.append(extent - size)
    return starts


@torch.inference_mode()
def predict_tissue(loaded: LoadedTissueModel, rgb: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """Bool tissue mask of an RGB uint8 image at the model's µm/px (windowed, overlapping, centre-stitched)."""
    spec = loaded.spec
    size, overlap = spec.input_px, spec.overlap_px
    h, w = rgb.shape[:2]
    ph, pw = max(h, size), max(w, size)
    canvas = np.full((ph, pw, 3), 255, dtype=np.uint8)
    canvas[:h, :w] = rgb
    step = size - overlap
    origins = [(y, x) for y in _windows(ph, size, step) for x in _windows(pw, size, step)]
    mean = torch.tensor(spec.mean, device=loaded.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=loaded.device).view(1, 3, 1, 1)
    votes = np.zeros((ph, pw), dtype=np.float32)
    filled = np.zeros((ph, pw), dtype=bool)
    margin = overlap // 2
    for i in range(0, len(origins), batch_size):
        chunk = origins[i:i + batch_size]
        x = torch.from_numpy(np.stack([canvas[y:y + size, x0:x0 + size] for y, x0 in chunk]))
        x = (x.to(loaded.device).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        logits = loaded.model(x)["out"]
        prob = torch.softmax(logits.float(), dim=1)[:, spec.tissue_class].cpu().numpy()
        for (y, x0), p in zip(chunk, prob, strict=True):
            # keep each window's centre (its outer overlap/2 is least reliable); at the canvas border keep all
            top, left = (0 if y == 0 else margin), (0 if x0 == 0 else margin)
            bottom, right = (size if y + size >= ph else size - margin), (size if x0 + size >= pw else size - margin)
            region = (slice(y + top, y + bottom), slice(x0 + left, x0 + right))
            fresh = ~filled[region]
            votes[region][fresh] = p[top:bottom, left:right][fresh]
            filled[region] = True
    return votes[:h, :w] > 0.5
