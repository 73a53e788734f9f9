"""Slide → features: many slides, one HDF5 file each, resumable, sharded, never losing or faking work.

Example:
    >>> from gpfm.extract import extract_slides
    >>> summary = extract_slides(["slides/"], encoder="gpfm", out_dir="job")  # doctest: +SKIP
    >>> summary.counts  # doctest: +SKIP
    {'done': 12, 'failed': 1}
"""

from gpfm.extract.layout import JobLayout, TilingConfigMismatchError
from gpfm.extract.locks import SlideLock, try_acquire
from gpfm.extract.run import RunSummary, extract_slides
from gpfm.extract.sharding import ShardSpec, lpt_assign, parse_shard, shard_from_env
from gpfm.extract.slide import SegmentationSettings, embed_slide, write_slide_features
from gpfm.extract.slides import SlideEntry, SlideListError, collect_slides
from gpfm.extract.state import SlideState

__all__ = [
    "JobLayout",
    "RunSummary",
    "SegmentationSettings",
    "ShardSpec",
    "SlideEntry",
    "SlideListError",
    "SlideLock",
    "SlideState",
    "TilingConfigMismatchError",
    "collect_slides",
    "embed_slide",
    "extract_slides",
    "lpt_assign",
    "parse_shard",
    "shard_from_env",
    "try_acquire",
    "write_slide_features",
]
