"""The job's tiling + segmentation configuration and its hash, known before any slide is opened.

The hash must equal the ``tiling_config_sha256`` that :func:`gpfm.wsi.tile_slide` records for every slide, so
a complete coordinates or features file can be recognised without re-running segmentation. The segmentation
parameters are therefore expanded here exactly as :func:`gpfm.wsi.tissue.segment_tissue` records them: the
method's preset with the caller's overrides applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gpfm.extract.slide import SegmentationSettings
from gpfm.wsi import TilingConfig, tiling_config_dict, tiling_config_sha256


def canonical_seg_params(method: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The parameter record ``segment_tissue(method=..., **overrides)`` stores."""
    from gpfm.wsi.tissue import METHODS, PRESETS, learned_params, learned_record

    if method not in METHODS:
        raise ValueError(f"unknown tissue method {method!r}; choose one of {', '.join(METHODS)}")
    overrides = dict(overrides or {})
    if method not in PRESETS:  # a learned segmenter: its weights' identity is part of the configuration
        from gpfm.wsi.tissue_models import weights_identity

        p, _ = learned_params(method, None, **overrides)
        return learned_record(method, p, weights_identity(method, overrides.get("weights")))
    if method == "geojson":
        if "path" not in overrides:
            raise ValueError("seg_method='geojson' needs seg_params={'path': 'tissue.geojson'}")
        p = dataclasses.replace(PRESETS[method], **{k: v for k, v in overrides.items()
                                                    if k not in ("path", "classification")})
        return {"path": str(overrides["path"]), "classification": overrides.get("classification"),
                "seg_mpp": p.seg_mpp}
    return dataclasses.asdict(dataclasses.replace(PRESETS[method], **overrides))


def resolve_tiling(
    recipe: str = "gpfm-128um",
    tiling: TilingConfig | None = None,
    seg_method: str = "hsv",
    seg_params: dict[str, Any] | None = None,
) -> tuple[TilingConfig, SegmentationSettings, str, dict[str, Any]]:
    """(tiling config, segmentation settings, configuration sha256, full configuration dict)."""
    config = tiling if tiling is not None else TilingConfig.from_recipe(recipe)
    segmentation = SegmentationSettings(seg_method, dict(seg_params or {}))
    recorded = canonical_seg_params(seg_method, seg_params)
    return (config, segmentation, tiling_config_sha256(config, seg_method, recorded),
            tiling_config_dict(config, seg_method, recorded))
