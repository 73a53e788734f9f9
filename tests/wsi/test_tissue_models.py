"""Learned tissue segmenters: the windowed inference, offline weight resolution, and the real-slide path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from gpfm.weights import WeightsNotFoundError
from gpfm.wsi import open_slide, segment_tissue
from gpfm.wsi.tissue_models import TISSUE_MODELS, LoadedTissueModel, _lightning_to_plain, predict_tissue


class _SaturationNet(nn.Module):
    """A 'model' whose tissue logit is the pixel saturation minus a threshold: predictable output."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        rgb = x * std + mean
        sat = rgb.amax(1) - rgb.amin(1)
        tissue = (sat - 0.1) * 50
        return {"out": torch.stack([-tissue, tissue], dim=1)}


def _loaded(size: int = 64, overlap: int = 16) -> LoadedTissueModel:
    spec = dataclasses.replace(TISSUE_MODELS.get("deeplabv3-mobilenet"), input_px=size, overlap_px=overlap)
    return LoadedTissueModel(spec, _SaturationNet(), "test", torch.device("cpu"))


def test_windowed_prediction_equals_the_whole_image_prediction():
    rng = np.random.default_rng(0)
    image = np.full((150, 230, 3), 240, np.uint8)
    image[20:90, 30:200] = (200, 80, 160)  # a pink "tissue" block
    image += rng.integers(0, 5, image.shape, dtype=np.uint8)
    mask = predict_tissue(_loaded(), image)
    sat = (image.max(2).astype(float) - image.min(2)) / 255.0
    assert mask.shape == image.shape[:2]
    np.testing.assert_array_equal(mask, sat > 0.1)  # stitching neither drops nor duplicates any pixel


def test_a_learned_segmenter_on_a_real_slide_finds_its_tissue(cmu_path, monkeypatch):
    import gpfm.wsi.tissue_models as tm

    monkeypatch.setattr(tm, "load_tissue_model", lambda name, weights=None, device=None: _loaded(512, 64))
    slide = open_slide(cmu_path)
    learned = segment_tissue(slide, "deeplabv3-mobilenet", weights="random")
    hsv = segment_tissue(slide)
    inter = learned.geometry.intersection(hsv.geometry).area
    assert learned.method == "deeplabv3-mobilenet" and learned.params["weights_sha256"] == "test"
    assert inter / hsv.geometry.area > 0.8 and inter / learned.geometry.area > 0.8


def test_random_weights_run_end_to_end_and_missing_weights_say_where(cmu_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GPFM_WEIGHTS_DIR", "/nonexistent")
    slide = open_slide(cmu_path)
    mask = segment_tissue(slide, "deeplabv3-mobilenet", weights="random")  # real model, random weights
    assert mask.params["model"] == "deeplabv3-mobilenet" and mask.mask.dtype == bool
    with pytest.raises(WeightsNotFoundError, match="tissue segmenter 'deeplabv3-hest'.*--seg-weights"):
        segment_tissue(slide, "deeplabv3-hest")


def test_checkpoint_conversion_strips_lightning_wrappers():
    model = TISSUE_MODELS.get("deeplabv3-mobilenet").build()
    wrapped = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
               "epoch": 3}
    wrapped["state_dict"]["model.aux_classifier.0.weight"] = torch.zeros(1)
    plain = _lightning_to_plain(wrapped)
    assert set(plain) == set(model.state_dict())
    model.load_state_dict(plain, strict=True)


@pytest.mark.slow
def test_hest_architecture_runs_on_a_real_slide(cmu_path):
    slide = open_slide(cmu_path)
    mask = segment_tissue(slide, "deeplabv3-hest", weights="random")
    assert mask.params["seg_mpp"] == 1.0 and mask.scale == pytest.approx(1.0 / 0.499)
