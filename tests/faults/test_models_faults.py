"""``gpfm convert`` / ``gpfm embed`` / unknown commands: bad files and options give one line and exit 2."""

from __future__ import annotations

import pytest
import torch

from gpfm.errors import EXIT_INPUT
from tests.faults._helpers import SHARED, assert_one_line_error

EFFNET = "efficientnet-lite0-imagenet"


@pytest.fixture(scope="module")
def effnet_weights(tmp_path_factory):
    """A real EfficientNet-Lite0 state dict file: the wrong architecture for GPFM."""
    from gpfm.models import create_encoder

    path = tmp_path_factory.mktemp("w") / "effnet.pth"
    torch.save(create_encoder(EFFNET, weights="random", device="cpu", precision="fp32").model.state_dict(), path)
    return path


def test_convert_missing_empty_and_foreign_checkpoints(tmp_path, gpfm_cli, effnet_weights):
    missing = gpfm_cli("convert", tmp_path / "nope.pth", tmp_path / "out.safetensors")
    assert missing.code == EXIT_INPUT
    assert_one_line_error(missing, "nope.pth", "no such checkpoint file")
    (tmp_path / "zero.pth").write_bytes(b"")
    zero = gpfm_cli("convert", tmp_path / "zero.pth", tmp_path / "out.safetensors")
    assert zero.code == EXIT_INPUT
    assert_one_line_error(zero, "zero.pth", "empty (0 bytes)", "fetch it again")
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 1000)
    junk = gpfm_cli("convert", tmp_path / "junk.pth", tmp_path / "out.safetensors")
    assert junk.code == EXIT_INPUT
    assert_one_line_error(junk, "junk.pth", "cannot read checkpoint")
    foreign = gpfm_cli("convert", effnet_weights, tmp_path / "out.safetensors")
    assert foreign.code == EXIT_INPUT
    assert_one_line_error(foreign, str(effnet_weights), "GPFM")
    bad_to = gpfm_cli("convert", effnet_weights, tmp_path / "out.x", "--to", "onnx")
    assert bad_to.code == EXIT_INPUT
    assert_one_line_error(bad_to, "--to timm")
    assert not list(tmp_path.glob("out*"))  # nothing written on any failure


def test_embed_bad_sources_and_weights(tmp_path, gpfm_cli, effnet_weights):
    out = tmp_path / "t.h5"
    assert_one_line_error(gpfm_cli("embed", tmp_path / "nope", "-o", out, "-e", EFFNET), "nope", "no such folder")
    (tmp_path / "empty").mkdir()
    empty = gpfm_cli("embed", tmp_path / "empty", "-o", out, "-e", EFFNET)
    assert empty.code == EXIT_INPUT
    assert_one_line_error(empty, "empty", "no images")
    (tmp_path / "list.csv").write_text("file\nx.png\n")
    nocol = gpfm_cli("embed", tmp_path / "list.csv", "-o", out, "-e", EFFNET)
    assert nocol.code == EXIT_INPUT
    assert_one_line_error(nocol, "list.csv", "'path' column")
    tile_dir = SHARED / "patches" / "nct_crc_he_100k_samples"
    if not tile_dir.is_dir():
        pytest.skip("real tiles not available")
    wrong = gpfm_cli("embed", tile_dir, "-o", out, "-e", "gpfm", "--weights", effnet_weights)
    assert wrong.code == EXIT_INPUT
    assert_one_line_error(wrong, str(effnet_weights), "gpfm")
    bad_out = gpfm_cli("embed", tile_dir, "-o", tmp_path / "t.txt", "-e", EFFNET, "--weights", "random")
    assert bad_out.code == EXIT_INPUT
    assert_one_line_error(bad_out, "t.txt", ".h5")
    assert not out.exists()


def test_extract_wrong_architecture_weights_is_one_line(tmp_path, gpfm_cli, effnet_weights, cmu):
    result = gpfm_cli("extract", cmu, "--encoder", "gpfm", "--weights", effnet_weights, "--out", tmp_path / "job",
                      "--device", "cpu")
    assert result.code == EXIT_INPUT
    assert_one_line_error(result, str(effnet_weights))
    assert not (tmp_path / "job" / "state").exists()


def test_unknown_command_and_option_are_usage_errors(gpfm_cli):
    assert gpfm_cli("extrakt").code == EXIT_INPUT
    assert gpfm_cli("extract", "--no-such-flag").code == EXIT_INPUT


def test_checksum_message_names_a_switch_that_exists(tmp_path, monkeypatch):
    from gpfm.models.checkpoints import CheckpointError
    from gpfm.models.factory import ALLOW_UNVERIFIED_ENV, _verify_checksum
    from gpfm.models.spec import WeightSource

    class Spec:
        name = "x"
        weights = WeightSource(env_var="X", pinned=(("timm", "sha256", "0" * 64),))

    path = tmp_path / "w.pth"
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match=ALLOW_UNVERIFIED_ENV) as err:
        _verify_checksum(Spec, path, "timm", "1" * 64, allow_unverified=False)
    assert "--allow-unverified" not in str(err.value)
    monkeypatch.setenv(ALLOW_UNVERIFIED_ENV, "1")
    _verify_checksum(Spec, path, "timm", "1" * 64, allow_unverified=False)  # accepted, with a warning
