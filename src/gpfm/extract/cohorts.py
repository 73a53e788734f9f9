"""Embed a benchmark cohort for a suite, and link the features folder its tasks read.

One resumable extraction job per cohort × tiling recipe; the per-encoder features folder the suite's tasks read
is a link to the job's output.

``gpfm bench SUITE --extract`` calls :func:`extract_cohort` for every cohort its tasks need and every encoder,
before the protocols run. Rerunning is cheap: finished slides are skipped by the job's own resume rules, and a
changed slide or tiling is redone, exactly as for ``gpfm extract``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpfm.errors import InputError
from gpfm.extract.layout import JobLayout
from gpfm.extract.run import RunSummary, extract_slides


@dataclass(frozen=True)
class CohortExtraction:
    """The result of embedding one cohort with one encoder.

    Attributes:
        cohort: cohort name.
        encoder: encoder name.
        job_dir: the extraction job (shared by every encoder with the same recipe).
        features_dir: where the task loaders read the features (a link to the job's features folder).
        summary: the extraction run's summary.
    """

    cohort: str
    encoder: str
    job_dir: Path
    features_dir: Path
    summary: RunSummary


def link_features(target: Path, link: Path) -> None:
    """Make ``link`` point at ``target`` (relative symlink); never replaces a real folder a user filled."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    elif link.exists():
        if link.is_dir() and link.resolve() == target.resolve():
            return
        raise InputError(f"{link}: exists and is not gpfm's link to {target}; move it away or point the suite's "
                         "cohort features elsewhere")
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def extract_cohort(
    name: str,
    slides: str | os.PathLike[str],
    features_template: str,
    encoder: str,
    jobs_root: str | os.PathLike[str],
    *,
    recipe: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    progress: bool | None = None,
) -> CohortExtraction:
    """Run (or resume) the extraction of cohort ``name`` with ``encoder`` and link its features folder.

    Args:
        name: cohort name (the job folder is ``<jobs_root>/<name>__<recipe>``).
        slides: slide folder, file or manifest CSV.
        features_template: the suite's features folder with ``{encoder}``.
        encoder: registered encoder name.
        jobs_root: where extraction jobs live.
        recipe: tiling recipe; default the encoder's recommended one.
        weights: weights file or ``random`` (as for :func:`gpfm.extract.run.extract_slides`).
        device: torch device.
        precision: encoder precision (None: the encoder's default).
        progress: progress bar/log lines (None: automatic).
    """
    from gpfm.models import get_encoder_spec

    slides = Path(slides)
    if not slides.exists():
        raise InputError(f"cohort {name}: slides {slides} do not exist; put the cohort's slides there (a folder or "
                         f"a slide_id,path manifest) or change the suite's cohorts.{name}.slides")
    recipe = recipe or get_encoder_spec(encoder).tile_recipe
    job_dir = Path(jobs_root) / f"{name}__{recipe}"
    summary = extract_slides(slides, encoder=encoder, out_dir=job_dir, weights=weights, recipe=recipe,
                             device=device, precision=precision, progress=progress)
    tiling_dir_name = next((p.name for p in job_dir.iterdir() if (p / f"features_{summary.encoder}").is_dir()),
                           None)
    if tiling_dir_name is None:
        raise InputError(f"cohort {name}: extraction wrote no features under {job_dir}; see {job_dir}/summary.csv")
    features = JobLayout(job_dir, tiling_dir_name, summary.encoder).features_dir
    link = Path(features_template.replace("{encoder}", encoder))
    link_features(features, link)
    return CohortExtraction(name, encoder, job_dir, link, summary)
