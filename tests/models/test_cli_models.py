"""CLI: --help on every command, `gpfm embed` on real LC25000 tiles, `gpfm models --json`."""

import csv
import json

import h5py
import pytest
from typer.testing import CliRunner

from gpfm.cli import app
from gpfm.extract.images import read_embeddings

runner = CliRunner()


def _all_commands(group, prefix=()):
    import typer.main

    cmd = typer.main.get_command(group)
    out = []

    def walk(c, path):
        out.append(path)
        for name, sub in getattr(c, "commands", {}).items():
            walk(sub, (*path, name))

    walk(cmd, prefix)
    return out


def test_help_on_every_command():
    paths = _all_commands(app)
    assert ("models",) in paths and ("embed",) in paths and ("convert",) in paths
    for path in paths:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output


def test_models_json_lists_every_encoder():
    res = runner.invoke(app, ["models", "--json"])
    names = {e["name"] for e in json.loads(res.output)}
    assert {"gpfm", "uni", "phikon", "conch"} <= names


@pytest.mark.realdata
def test_embed_real_lc25000_subset(lc25000_dir, lc25000_table, tmp_path):
    rows = [r for r in lc25000_table if r["file"].endswith(("1.jpeg", "5.jpeg"))][:18]
    listing = tmp_path / "tiles.csv"
    with open(listing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for r in rows:
            w.writerow([str(lc25000_dir / r["file"]), r["label"]])
        w.writerow([str(tmp_path / "broken.jpeg"), "lung_n"])
    (tmp_path / "broken.jpeg").write_bytes(b"not an image")
    out = tmp_path / "feats.h5"
    res = runner.invoke(app, ["embed", str(listing), "--encoder", "efficientnet-lite0-imagenet", "-o", str(out),
                              "--batch-size", "8", "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    assert "1 unreadable images skipped" in res.output
    feats, names, meta = read_embeddings(out)
    assert feats.shape == (18, 1280) and len(names) == 18
    assert meta["encoder"] == "efficientnet-lite0-imagenet" and meta["precision"] == "fp32"
    with h5py.File(out) as f:
        assert json.loads(f.attrs["failed_json"]).keys() == {str(tmp_path / "broken.jpeg")}
        assert [x.decode() for x in f["labels"][:3]] == [r["label"] for r in rows[:3]]
    # safetensors output holds the same numbers
    out2 = tmp_path / "feats.safetensors"
    res = runner.invoke(app, ["embed", str(listing), "-e", "efficientnet-lite0-imagenet", "-o", str(out2),
                              "--precision", "fp32"])
    feats2, names2, _ = read_embeddings(out2)
    assert names2 == names and abs(feats2 - feats).max() < 1e-4


def test_embed_bad_source_is_one_clear_error(tmp_path):
    res = runner.invoke(app, ["embed", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.h5")])
    assert res.exit_code != 0
    assert "no such folder or CSV" in str(res.exception)
