"""Typed pretraining config: presets, YAML/CLI overrides, unknown keys and bad values are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpfm.pretrain.config import ConfigError, load_config, preset_config

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "gpfm" / "configs" / "pretrain"


def test_release_defaults_are_the_faithful_config():
    cfg = preset_config("gpfm_vitl14")
    assert (cfg.student.arch, cfg.student.patch_size, cfg.student.drop_path_rate) == ("vit_large", 14, 0.4)
    assert cfg.student.drop_path_uniform and cfg.student.layerscale == 1e-5
    assert [(e.name, e.cls_weight, e.patch_weight) for e in cfg.distill.experts] == [
        ("uni", 1.0, 0.25),
        ("phikon", 0.5, 0.125),
        ("conch", 1.0, 0.0),
    ]
    assert cfg.data.batch_size_per_gpu == 96 and cfg.optim.total_iters == 500_000
    assert cfg.train.stop_at_iteration == 87_500 and cfg.heads.dino_out_dim == 65536
    assert (cfg.data.blur_semantics, cfg.distill.expert_norm, cfg.distill.align_dtype) == (
        "dinov2_inverted",
        "shared_imagenet",
        "fp16",
    )


@pytest.mark.parametrize("name", ["gpfm_vitl14", "tiny_cpu"])
def test_shipped_yaml_equals_preset(name):
    assert load_config(CONFIGS / f"{name}.yaml").to_dict() == preset_config(name).to_dict()


def test_overrides_apply_with_types():
    cfg = load_config(
        None,
        [
            "optim.base_lr=1e-3",
            "data.global_crops_scale=[0.4, 1]",
            "distill.experts.1.cls_weight=0",
            "train.stop_at_iteration=null",
        ],
    )
    assert cfg.optim.base_lr == 1e-3 and cfg.data.global_crops_scale == (0.4, 1.0)
    assert cfg.distill.experts[1].cls_weight == 0.0 and cfg.train.stop_at_iteration is None
    assert [e.name for e in cfg.distill.active_experts] == ["uni", "phikon", "conch"]
    cfg = load_config(None, ["distill.experts.1.patch_weight=0", "distill.experts.1.cls_weight=0"])
    assert [e.name for e in cfg.distill.active_experts] == ["uni", "conch"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown key 'lrr'"),
        ("optim.base_lr=abc", "expected float"),
        ("distill.align=nearest", "choose one of teacher_bicubic_up"),
        ("distill.experts.7.cls_weight=1", "has no item 7"),
        ("data.local_crops_size=100", "not a multiple of the patch size"),
        ("optim.base_lr", "not KEY=VALUE"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_yaml_unknown_section_and_preset(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: tiny_cpu\nstudnet: {arch: vit_small}\n")
    with pytest.raises(ConfigError, match="unknown key 'studnet'"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("preset: tiny_cpu\nstudent: {arch: vit_small}\n")
    cfg = load_config(good)
    assert cfg.student.arch == "vit_small" and cfg.data.batch_size_per_gpu == 8
