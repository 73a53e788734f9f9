"""ROI task data: the :class:`RoiFeatures` protocols take, and the ``roi_images`` task loader that builds it.

A suite task's ``data:`` block for ROI images::

    data:
      kind: roi_images
      root: datasets/lc25000            # image folder: one sub-folder per class (or base folder of CSV paths)
      csv: labels.csv                   # optional, in root: path (or file/image), label[, split, group]
      labels: [lung_aca, lung_n, lung_scc]   # optional class order (ordinal tasks, κ); default sorted names
      hash: stat                        # dataset fingerprint for the cache: stat (size+mtime) or content
      split: {method: group_hash, test_size: 0.3, val_size: 0.1, seed: 0}

Split methods: ``group_hash`` (stratified; byte-identical images and the CSV ``group`` column are merged into
groups that never straddle splits), ``stratified`` (stratified; only the CSV ``group`` column counts) and
``csv`` (the CSV ``split`` column; a CSV group on two sides is an error, byte-identical images across the
split are counted in provenance and flagged; without val rows, ``val_size`` of train is carved out by groups).
"""

from __future__ import annotations

import csv
import functools
import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpfm.eval.data.cache import RoiFeatureCache
from gpfm.eval.data.labels import check_two_classes, handle_missing_labels
from gpfm.eval.data.splits import (
    SPLITS,
    carve_val,
    check_groups_disjoint,
    merge_groups,
    normalize_split_name,
    split_hash,
    straddling_groups,
    stratified_group_split,
)
from gpfm.eval.protocol import TaskContext

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_PATH_COLUMNS = ("path", "file", "filename", "image")


@dataclass
class RoiFeatures:
    """Frozen ROI features with labels and a train/val/test assignment (what ROI protocols consume).

    Attributes:
        features: (N, D) float32 embeddings.
        labels: (N,) int64 class indices into ``label_names``.
        label_names: class names, index = label.
        ids: (N,) item ids (relative image paths).
        split: (N,) ``train``/``val``/``test``.
        groups: (N,) group ids that never straddle splits (None when every item is its own group).
        provenance: encoder, cache key, dataset hash, split method, split hash... recorded in every result.
    """

    features: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    ids: np.ndarray
    split: np.ndarray
    groups: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.ids = np.asarray(self.ids).astype(str)
        self.split = np.asarray(self.split).astype(str)
        self.label_names = [str(n) for n in self.label_names]
        n = len(self.features)
        if self.features.ndim != 2:
            raise ValueError(f"features must be (N, D); got shape {self.features.shape}")
        for name in ("labels", "ids", "split"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RoiFeatures.{name} has {len(getattr(self, name))} rows, features have {n}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
            raise ValueError(f"labels must index label_names (0..{len(self.label_names) - 1})")
        bad = sorted(set(self.split.tolist()) - set(SPLITS))
        if bad:
            raise ValueError(f"unknown split names {bad}; use train, val, test")
        self.provenance.setdefault("split_hash", split_hash(self.ids, self.split))

    @classmethod
    def with_split(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        label_names: list[str],
        ids: np.ndarray,
        groups: np.ndarray | None = None,
        test_size: float = 0.3,
        val_size: float = 0.1,
        seed: int = 0,
        provenance: dict[str, Any] | None = None,
    ) -> RoiFeatures:
        """Build with a stratified group split (``groups`` e.g. content hashes keep duplicates together)."""
        group_ids = None if groups is None else merge_groups(np.asarray(groups).astype(str))
        split = stratified_group_split(labels, group_ids, test_size, val_size, seed)
        prov = dict(provenance or {})
        prov["split"] = {
            "method": "stratified_group",
            "test_size": test_size,
            "val_size": val_size,
            "seed": seed,
        }
        return cls(features, labels, label_names, ids, split, group_ids, prov)

    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.label_names)

    def has(self, name: str) -> bool:
        """Whether split ``name`` has any item."""
        return bool((self.split == name).any())

    def indices(self, *names: str) -> np.ndarray:
        """Row indices of the union of the named splits, in row order."""
        return np.flatnonzero(np.isin(self.split, names))

    def arrays(self, *names: str) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of the union of the named splits."""
        idx = self.indices(*names)
        return self.features[idx], self.labels[idx]

    def counts(self) -> dict[str, int]:
        """Items per split."""
        return {s: int((self.split == s).sum()) for s in SPLITS}


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Gpfm version plus the git commit of the source tree when run from a checkout."""
    from gpfm import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+g{commit}" if commit else __version__


@dataclass
class RoiListing:
    """Items of an ROI dataset before embedding (ids relative to ``root``)."""

    root: Path
    ids: list[str]
    labels: list[str]
    splits: list[str] | None
    groups: list[str] | None
    n_missing_labels: int = 0


def list_folder(root: Path) -> RoiListing:
    """Images under ``root/<class>/...`` (recursively), the class being the first folder level."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: ROI image folder not found; set data.root to a folder of class folders"
        )
    ids, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                ids.append(path.relative_to(root).as_posix())
                labels.append(class_dir.name)
    if not ids:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders")
    return RoiListing(root, ids, labels, None, None)


def list_csv(csv_path: Path, root: Path | None, missing_labels: str = "error") -> RoiListing:
    """Rows ``path,label[,split,group]`` of a CSV; relative paths resolve against ``root`` or its folder.

    Rows without a label fail the task (``missing_labels="error"``) or are left out (``"drop"``, counted).
    """
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: ROI label CSV not found; check data.csv")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    columns = set(rows[0])
    path_col = next((c for c in _PATH_COLUMNS if c in columns), None)
    if path_col is None or "label" not in columns:
        raise ValueError(
            f"{csv_path}: needs columns path (or file/filename/image) and label; has {sorted(columns)}"
        )
    base = root if root is not None else csv_path.parent
    keep = handle_missing_labels([r["label"] for r in rows], missing_labels, str(csv_path))
    n_missing = int((~keep).sum())
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    ids, labels = [], []
    for line, row in enumerate(rows, start=2):
        path = Path(row[path_col])
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise FileNotFoundError(
                f"{csv_path}:{line}: image {path} not found; paths resolve against {base}"
            )
        ids.append(path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path))
        labels.append(str(row["label"]).strip())
    splits = (
        [normalize_split_name(r["split"], f"{csv_path} split column") for r in rows]
        if "split" in columns
        else None
    )
    groups = [str(r["group"]).strip() for r in rows] if "group" in columns else None
    return RoiListing(base, ids, labels, splits, groups, n_missing)


def _resolve(base: Path, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def load_roi_images(data: dict[str, Any], ctx: TaskContext) -> RoiFeatures:
    """Embed (or read from the cache) an ROI image dataset and split it, for one encoder.

    Args:
        data: the task's ``data:`` block (see the module docstring).
        ctx: encoder, cache folder, device, precision and the base folder of relative paths.

    Returns:
        :class:`RoiFeatures` with provenance (encoder, weights sha, cache key, dataset hash, split hash).
    """
    unknown = sorted(set(data) - {"kind", "root", "csv", "labels", "split", "hash", "missing_labels"})
    if unknown:
        raise ValueError(
            f"roi_images data block: unknown key(s) {unknown}; known: root, csv, labels, split, hash, missing_labels"
        )
    root = _resolve(ctx.base_dir, data["root"]) if data.get("root") else None
    if data.get("csv"):
        # a relative csv lives in root when root is given (``root: .../CRC-100K, csv: labels.csv``)
        listing = list_csv(_resolve(root if root is not None else ctx.base_dir, data["csv"]), root,
                           str(data.get("missing_labels", "error")))
    elif root is not None:
        listing = list_folder(root)
    else:
        raise ValueError("roi_images data block needs root (image folder) or csv")
    names = [str(n) for n in data.get("labels") or sorted(set(listing.labels))]
    missing = sorted(set(listing.labels) - set(names))
    if missing:
        raise ValueError(f"labels {missing} occur in the data but not in data.labels {names}")

    cached = RoiFeatureCache(ctx.cache_dir).get_or_embed(
        listing.root,
        listing.ids,
        ctx.encoder,
        labels=listing.labels,
        weights=ctx.weights,
        device=ctx.device,
        precision=ctx.precision,
        batch_size=ctx.batch_size,
        hash_mode=data.get("hash", "stat"),
    )
    row_of = {item: i for i, item in enumerate(listing.ids)}
    order = np.array([row_of[i] for i in cached.ids])
    labels = np.array([names.index(listing.labels[i]) for i in order])
    user_groups = None if listing.groups is None else [listing.groups[i] for i in order]

    spec = {"method": "group_hash", "test_size": 0.3, "val_size": 0.1, "seed": 0, **(data.get("split") or {})}
    unknown_split = sorted(set(spec) - {"method", "test_size", "val_size", "seed"})
    if unknown_split:
        raise ValueError(
            f"roi_images split: unknown key(s) {unknown_split}; known: method, test_size, val_size, seed"
        )
    method = spec["method"]
    duplicate_leaks = 0
    if method == "group_hash":
        groups = merge_groups(cached.sha256.tolist(), user_groups)
        split = stratified_group_split(labels, groups, spec["test_size"], spec["val_size"], spec["seed"])
    elif method == "stratified":
        groups = merge_groups(user_groups) if user_groups is not None else None
        split = stratified_group_split(labels, groups, spec["test_size"], spec["val_size"], spec["seed"])
    elif method == "csv":
        if listing.splits is None:
            raise ValueError("split method csv needs a split column in data.csv")
        split = np.array([listing.splits[i] for i in order])
        if user_groups is not None:  # a patient on two sides is an error in the user's split ...
            check_groups_disjoint(split, merge_groups(user_groups))
        groups = merge_groups(cached.sha256.tolist(), user_groups)
        # ... byte-identical images across an official split are the dataset's; count and flag them
        duplicate_leaks = len(straddling_groups(split, groups))
        if duplicate_leaks:
            log.warning("%d groups of byte-identical images straddle the CSV split", duplicate_leaks)
        if not (split == "val").any() and spec["val_size"] > 0:
            split = carve_val(split, labels, groups, spec["val_size"], spec["seed"])
    else:
        raise ValueError(f"unknown split method {method!r}; use group_hash, stratified or csv")

    provenance = {
        "encoder": ctx.encoder,
        "weights_sha256": cached.key.weights_sha,
        "preprocess_recipe": cached.key.recipe,
        "precision": cached.key.precision,
        "encoder_metadata": cached.manifest.get("encoder", {}),
        "feature_cache_key": cached.key.as_string(),
        "feature_cache_reused": cached.reused,
        "dataset_hash": cached.key.dataset,
        "dataset_root": str(listing.root),
        "split": spec,
        "duplicate_groups_across_splits": duplicate_leaks,
        "missing_labels_dropped": listing.n_missing_labels,
        "code_version": code_version(),
    }
    check_two_classes(labels, names, {p: np.flatnonzero(split == p) for p in ("train", "val", "test")},
                      f"ROI task at {listing.root}")
    return RoiFeatures(cached.features, labels, names, cached.ids, split, groups, provenance)
