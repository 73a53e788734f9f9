"""The job directory layout (TRIDENT-compatible names) and the tiling-configuration guard.

::

    <job>/thumbnails/<slide>.jpg                 <job>/state/<slide>.json
    <job>/contours/<slide>.jpg                   <job>/runs/<run_id>.json
    <job>/contours_geojson/<slide>.geojson       <job>/summary.csv
    <job>/<tiling>/patches/<slide>_patches.h5
    <job>/<tiling>/visualization/<slide>.jpg
    <job>/<tiling>/qc/<slide>.jpg                 (tile QC overlay)
    <job>/<tiling>/features_<encoder>/<slide>.h5
    <job>/<tiling>/feature_maps_<encoder>/<slide>.jpg
    <job>/<tiling>/tiling_config.json

``<tiling>`` is :meth:`gpfm.wsi.TilingConfig.dir_name`: ``{mag}x_{tile_px}px_{overlap}px_overlap`` with
mag = 10 / target_mpp when that is an integer (``gpfm-128um`` → ``20x_256px_0px_overlap``), else
``{target_mpp}mpp_{tile_px}px_{overlap}px_overlap``.
TRIDENT keys that folder on magnification, size and overlap only, so changed segmentation settings would
silently reuse stale coordinates; here ``tiling_config.json`` holds the full configuration and its SHA-256,
and a different configuration for the same folder is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpfm.atomic import write_json_atomic
from gpfm.errors import GpfmError
from gpfm.extract.slides import check_slide_id


class TilingConfigMismatchError(GpfmError, RuntimeError):
    """The tiling folder already holds coordinates made with a different configuration."""


def _safe(slide_id: str) -> str:
    """The slide id, checked once more where it becomes a path (defence in depth: never write outside the job)."""
    return check_slide_id(slide_id, "job layout")


@dataclass(frozen=True)
class JobLayout:
    """Paths of one job directory for one tiling and one encoder."""

    root: Path
    tiling_name: str
    encoder_name: str

    @property
    def tiling_dir(self) -> Path:
        """``<job>/<tiling>``."""
        return self.root / self.tiling_name

    @property
    def state_dir(self) -> Path:
        """``<job>/state``."""
        return self.root / "state"

    @property
    def runs_dir(self) -> Path:
        """``<job>/runs``."""
        return self.root / "runs"

    @property
    def summary_csv(self) -> Path:
        """``<job>/summary.csv``."""
        return self.root / "summary.csv"

    @property
    def tiling_config_json(self) -> Path:
        """``<job>/<tiling>/tiling_config.json``."""
        return self.tiling_dir / "tiling_config.json"

    @property
    def features_dir(self) -> Path:
        """``<job>/<tiling>/features_<encoder>``."""
        return self.tiling_dir / f"features_{self.encoder_name}"

    def thumbnail(self, slide_id: str) -> Path:
        """``thumbnails/<slide>.jpg``."""
        return self.root / "thumbnails" / f"{_safe(slide_id)}.jpg"

    def contours(self, slide_id: str) -> Path:
        """``contours/<slide>.jpg``."""
        return self.root / "contours" / f"{_safe(slide_id)}.jpg"

    def contours_geojson(self, slide_id: str) -> Path:
        """``contours_geojson/<slide>.geojson``."""
        return self.root / "contours_geojson" / f"{_safe(slide_id)}.geojson"

    def patches(self, slide_id: str) -> Path:
        """``<tiling>/patches/<slide>_patches.h5``."""
        return self.tiling_dir / "patches" / f"{_safe(slide_id)}_patches.h5"

    def visualization(self, slide_id: str) -> Path:
        """``<tiling>/visualization/<slide>.jpg``."""
        return self.tiling_dir / "visualization" / f"{_safe(slide_id)}.jpg"

    def qc_overlay(self, slide_id: str) -> Path:
        """``<tiling>/qc/<slide>.jpg``: tile QC over the thumbnail (excluded tiles filled by reason)."""
        return self.tiling_dir / "qc" / f"{_safe(slide_id)}.jpg"

    def features(self, slide_id: str) -> Path:
        """``<tiling>/features_<encoder>/<slide>.h5``."""
        return self.features_dir / f"{_safe(slide_id)}.h5"

    def feature_map(self, slide_id: str) -> Path:
        """``<tiling>/feature_maps_<encoder>/<slide>.jpg`` (PCA colours of the tile features)."""
        return self.tiling_dir / f"feature_maps_{self.encoder_name}" / f"{_safe(slide_id)}.jpg"

    def run_record(self, run_id: str) -> Path:
        """``runs/<run_id>.json``."""
        return self.runs_dir / f"{run_id}.json"


def guard_tiling_config(layout: JobLayout, config: dict[str, Any], sha256: str, force: bool = False) -> None:
    """Write ``tiling_config.json`` on first use; refuse a different configuration afterwards.

    Args:
        layout: the job layout.
        config: the full tiling + segmentation configuration (JSON-serialisable).
        sha256: its hash (as recorded in every coordinates file).
        force: overwrite a different recorded configuration (existing coordinates are then regenerated,
            because their ``tiling_config_sha256`` no longer matches).

    Raises:
        TilingConfigMismatchError: the folder holds a different configuration and ``force`` is False.
    """
    path = layout.tiling_config_json
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            recorded = {}
        old = recorded.get("sha256")
        if old == sha256:
            return
        if not force:
            raise TilingConfigMismatchError(
                f"{path} records tiling configuration {str(old)[:12]}…, but this run uses {sha256[:12]}… "
                "(different segmentation or tiling settings); use another --out folder, or pass --force to "
                "replace the configuration and regenerate the coordinates"
            )
    write_json_atomic(path, {"sha256": sha256, "config": config})
