"""Offline-first weight resolution: explicit path, env var, weights folder, packaged file; clear errors."""

import pytest
import torch

from gpfm.models import WeightsNotFoundError, create_encoder, get_encoder_spec, resolve_weights
from gpfm.models.checkpoints import save_safetensors_atomic


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("GPFM_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("GPFM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("UNI_WEIGHTS", raising=False)
    monkeypatch.delenv("PHIKON_WEIGHTS", raising=False)


def test_offline_without_weights_is_one_clear_error():
    with pytest.raises(WeightsNotFoundError) as err:
        create_encoder("uni", device="cpu")
    msg = str(err.value)
    assert "huggingface.co/MahmoodLab/uni" in msg and "gated" in msg
    assert "--weights PATH" in msg and "UNI_WEIGHTS=PATH" in msg


def test_explicit_random_is_the_only_way_to_random_weights():
    enc = create_encoder("phikon", weights="random", device="cpu", precision="fp32")
    assert enc.weights_sha256 == "random" and enc.checkpoint_format == "random"


def test_missing_explicit_path_names_the_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nope.pth: weights file for 'uni' not found"):
        create_encoder("uni", weights=tmp_path / "nope.pth", device="cpu")


def test_env_var_and_weights_dir_are_searched(tmp_path, monkeypatch):
    spec = get_encoder_spec("phikon")
    model = spec.build()
    path = tmp_path / "phikon.safetensors"
    save_safetensors_atomic(model.state_dict(), path)
    monkeypatch.setenv("PHIKON_WEIGHTS", str(path))
    assert resolve_weights(spec, None).source == "env:PHIKON_WEIGHTS"
    monkeypatch.delenv("PHIKON_WEIGHTS")
    (tmp_path / "weights").mkdir()
    path.rename(tmp_path / "weights" / "phikon.safetensors")
    assert resolve_weights(spec, None).source == "weights_dir"
    enc = create_encoder("phikon", device="cpu", precision="fp32")  # timm-layout file, loaded strictly
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = model.forward_tokens(x)[:, 0]
    assert torch.allclose(enc.embed(x), ref, atol=1e-5)
    monkeypatch.setenv("PHIKON_WEIGHTS", str(tmp_path / "missing.bin"))
    with pytest.raises(WeightsNotFoundError, match="PHIKON_WEIGHTS=.*missing.bin: file not found"):
        resolve_weights(spec, None)


def test_packaged_weights_resolve_offline():
    resolved = resolve_weights(get_encoder_spec("efficientnet-lite0-imagenet"), None)
    assert resolved.source == "package" and resolved.path.name == "efficientnet-lite0-57934424.pth"
