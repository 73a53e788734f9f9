import pytest

from gpfm.models import ENCODERS, get_encoder_spec, list_encoders
from gpfm.registry import Registry, UnknownNameError


def test_registry_refuses_duplicates_and_lists_known_names():
    reg = Registry[int]("thing")
    reg.register("alpha", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", 2)
    with pytest.raises(UnknownNameError, match=r"unknown thing 'alpah'\. Did you mean 'alpha'\?.*alpha"):
        reg.get("alpah")


def test_required_encoders_are_registered():
    names = set(list_encoders())
    assert {"gpfm", "uni", "phikon", "conch", "resnet50-imagenet", "efficientnet-lite0-imagenet"} <= names
    assert len(ENCODERS) == len(names)


def test_unknown_encoder_error_lists_names():
    with pytest.raises(UnknownNameError, match="Known encoders: .*gpfm"):
        get_encoder_spec("gpfm-large")


@pytest.mark.parametrize("name", list_encoders())
def test_every_spec_documents_its_facts(name):
    spec = get_encoder_spec(name)
    facts = spec.summary()
    assert facts["embed_dim"] > 0 and facts["weights_license"] != "unknown"
    assert spec.tile_recipe in {"gpfm-128um", "trident-112um"}
    assert spec.weights.env_var.endswith("_WEIGHTS")
