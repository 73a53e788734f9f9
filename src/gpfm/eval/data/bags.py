r"""Slide (or case) bags of tile features for MIL and survival; the ``slide_h5`` / ``survival_h5`` loaders.

**In-memory bags.** Training reads bags as pre-loaded CPU tensors, never HDF5 per step:

>>> data = BagDataset(bags=[torch.randn(120, 768), torch.randn(80, 768)], labels=np.array([0, 1]),
...                   ids=["slide-a", "slide-b"])  # doctest: +SKIP

``BagDataset(bags, labels, ids, coords=None, ...)``: ``bags[i]`` is a float32 (N_i, D) tensor, ``labels[i]`` a
class index (classification), ``time``/``event`` the survival target (1 = event observed), ``coords[i]``
(N_i, 2) level-0 x, y row-aligned with ``bags[i]`` (for heatmaps), ``cases[i]`` the case of the bag (splits
keep a case on one side), ``folds`` optional pre-defined :class:`FoldSplit` objects.

**HDF5 bags** come from the whole-slide pipeline (TRIDENT layout): ``<dir>/<slide_id>.h5`` with datasets
``features`` (N, D) float32 and ``coords`` (N, 2). :class:`H5Bags` opens them lazily, one file per access;
``max_tiles`` keeps a seeded random subset of rows (sorted, so coords stay row-aligned). A case-level bag
concatenates the case's slides in table order.

Task loaders (``data.kind`` in a suite YAML) and their keys are documented in docs/eval-slide.md and on
:func:`load_slide_task` / :func:`load_survival_task`; splits are described in :mod:`gpfm.eval.data.folds`.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gpfm.eval.data.folds import FoldSplit, folds_from_table
from gpfm.eval.data.labels import check_two_classes, handle_missing_labels
from gpfm.eval.protocol import TaskContext
from gpfm.hashing import verify_array

_SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".dcm", ".vms", ".bif", ".czi", ".h5")


@dataclass
class BagDataset:
    """Bags of instance features held in memory (see the module docstring).

    Attributes:
        bags: float32 (N_i, D) tensors on CPU.
        labels: (n,) int class index per bag, or None (survival).
        ids: bag ids (slide or case ids).
        coords: (N_i, 2) level-0 coordinates per bag, or None.
        label_names: class names in index order.
        cases: case id per bag (defaults to ``ids``).
        time: (n,) survival time, or None.
        event: (n,) 1 = event observed (``1 - censorship``), or None.
        folds: pre-defined splits, or None (the protocol makes its own).
        members: the slide ids concatenated into each bag (case-level bags).
        member_sizes: tiles each member slide contributes, in order (splits a case's attention per slide).
        meta: provenance (source table, features folder, tile sampling).
    """

    bags: list[Tensor]
    labels: np.ndarray | None
    ids: list[str]
    coords: list[np.ndarray] | None = None
    label_names: list[str] | None = None
    cases: list[str] | None = None
    time: np.ndarray | None = None
    event: np.ndarray | None = None
    folds: list[FoldSplit] | None = None
    members: list[list[str]] | None = None
    member_sizes: list[list[int]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.bags)
        if len(self.ids) != n:
            raise ValueError(f"BagDataset: {n} bags but {len(self.ids)} ids")
        if len(set(self.ids)) != n:
            raise ValueError("BagDataset: bag ids must be unique")
        dims = {int(b.shape[1]) for b in self.bags if b.dim() == 2}
        if len(dims) > 1 or any(b.dim() != 2 or b.shape[0] == 0 for b in self.bags):
            raise ValueError(
                f"BagDataset: every bag must be a non-empty (N, D) tensor of one D; found D in {dims}"
            )
        for name in ("labels", "time", "event"):
            arr = getattr(self, name)
            if arr is not None:
                arr = np.asarray(arr)
                setattr(self, name, arr)
                if arr.shape != (n,):
                    raise ValueError(f"BagDataset: {name} has shape {arr.shape}, expected ({n},)")
        if self.coords is not None and [len(c) for c in self.coords] != [b.shape[0] for b in self.bags]:
            raise ValueError("BagDataset: coords must be row-aligned with bags")
        if self.cases is None:
            self.cases = list(self.ids)
        self.bags = [b if b.dtype == torch.float32 else b.float() for b in self.bags]
        bad = next((i for i, b in enumerate(self.bags) if not bool(torch.isfinite(b).all())), None)
        if bad is not None:
            raise ValueError(
                f"BagDataset: bag {self.ids[bad]!r} has NaN or inf features; re-extract or drop it"
            )

    def __len__(self) -> int:
        return len(self.bags)

    @property
    def dim(self) -> int:
        """Instance feature size D."""
        return int(self.bags[0].shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (from ``label_names``, else the largest label + 1)."""
        if self.label_names is not None:
            return len(self.label_names)
        return int(np.max(self.labels)) + 1 if self.labels is not None else 0

    def pooled(self, mode: str = "mean") -> np.ndarray:
        """(n, D) mean- or max-pooled bag features (the input of ``surv.coxnet`` and linear baselines)."""
        fn = (lambda b: b.mean(0)) if mode == "mean" else (lambda b: b.max(0).values)
        return torch.stack([fn(b) for b in self.bags]).numpy()


def _stable_seed(seed: int, key: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**32)


def read_bag(
    path: str | Path, max_tiles: int | None = None, seed: int = 0
) -> tuple[Tensor, np.ndarray | None]:
    """Read one slide's ``features`` (and ``coords`` when present) from a TRIDENT-layout HDF5 file.

    Args:
        path: ``<slide>.h5``.
        max_tiles: keep at most this many rows, a seeded random subset in file order (None = all).
        seed: sampling seed; combined with the file name so each slide gets its own stable subset.

    Returns:
        ``(features (N, D) float32 tensor, coords (N, 2) int64 array or None)``.
    """
    path = Path(path)
    with h5py.File(path, "r", locking=False) as fh:
        if "features" not in fh:
            raise ValueError(
                f"{path}: no 'features' dataset (found {sorted(fh)}); expected the TRIDENT layout"
            )
        stored = fh["features"][()]  # the whole matrix: its checksum is verified before any row is used
        recorded = fh["features"].attrs.get("features_sha256")
        if stored.ndim == 3 and stored.shape[0] == 1:  # CLAM-era files store (1, N, D)
            stored = stored[0]
        verify_array(path, stored, recorded.decode() if isinstance(recorded, bytes) else recorded,
                     fix="delete it and rerun `gpfm extract` to rebuild it")
        n = stored.shape[0]
        rows: np.ndarray | slice = slice(None)
        if max_tiles is not None and n > max_tiles:
            rng = np.random.default_rng(_stable_seed(seed, path.stem))
            rows = np.sort(rng.choice(n, size=max_tiles, replace=False))
        x = np.asarray(stored[rows], dtype=np.float32)
        coords = np.asarray(fh["coords"][rows], dtype=np.int64) if "coords" in fh else None
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{path}: features have shape {x.shape}; a bag needs at least one (D,) row")
    return torch.from_numpy(x), coords


def _n_rows(path: Path) -> int:
    """Number of feature rows of a slide file, from its shape alone (nothing is read)."""
    with h5py.File(path, "r", locking=False) as fh:
        if "features" not in fh:
            return -1  # not a feature file: read_bag says so in full
        shape = fh["features"].shape
    return shape[1] if len(shape) == 3 and shape[0] == 1 else shape[0]


def _strip_suffix(slide_id: str) -> str:
    for suffix in _SLIDE_SUFFIXES:
        if slide_id.lower().endswith(suffix):
            return slide_id[: -len(suffix)]
    return slide_id


def find_h5(features_dir: Path, slide_id: str) -> Path | None:
    """``<dir>/<slide_id>.h5``, also trying the id without its slide extension (``x.svs`` → ``x.h5``)."""
    for stem in dict.fromkeys((slide_id, _strip_suffix(slide_id))):
        path = features_dir / f"{stem}.h5"
        if path.is_file():
            return path
    return None


class H5Bags:
    """Lazy access to bags stored as one HDF5 file per slide; each bag is read when indexed.

    Args:
        groups: bag id → the slide HDF5 paths concatenated into it (one for slide-level bags).
        max_tiles: per-slide tile cap (seeded random subset), None = all.
        seed: tile sampling seed.
    """

    def __init__(self, groups: dict[str, list[Path]], max_tiles: int | None = None, seed: int = 0) -> None:
        self.groups = groups
        self.ids = list(groups)
        self.max_tiles = max_tiles
        self.seed = seed
        self.member_sizes: dict[str, list[int]] = {}  # filled as bags are read

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[Tensor, np.ndarray | None]:
        parts = [read_bag(p, self.max_tiles, self.seed) for p in self.groups[self.ids[i]]]
        self.member_sizes[self.ids[i]] = [int(p[0].shape[0]) for p in parts]
        feats = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        coords = None if any(p[1] is None for p in parts) else np.concatenate([p[1] for p in parts])
        return feats, coords

    def load_all(self) -> tuple[list[Tensor], list[np.ndarray] | None]:
        """Read every bag into memory (what training uses)."""
        items = [self[i] for i in range(len(self))]
        coords = None if any(c is None for _, c in items) else [c for _, c in items]
        return [f for f, _ in items], coords


def _resolve(path: str, ctx: TaskContext) -> Path:
    p = Path(path.replace("{encoder}", ctx.encoder)).expanduser()
    return p if p.is_absolute() else ctx.base_dir / p


def _collect(
    table: pd.DataFrame, spec: dict[str, Any], ctx: TaskContext, level: str
) -> tuple[pd.DataFrame, dict[str, list[Path]], dict[str, Any]]:
    """Locate each slide's HDF5 and group the rows into bags; returns the one-row-per-bag table too."""
    slide_col = spec.get("slide_column", "slide_id")
    case_col = spec.get("case_column", "case_id" if "case_id" in table else None)
    for col in (slide_col, case_col):
        if col is not None and col not in table:
            raise ValueError(
                f"{spec['labels']}: no column {col!r} (columns: {', '.join(map(str, table.columns))})"
            )
    features_dir = _resolve(spec["features"], ctx)
    if not features_dir.is_dir():
        raise FileNotFoundError(
            f"features folder {features_dir} does not exist (data.features = {spec['features']!r})"
        )
    paths = [find_h5(features_dir, str(s)) for s in table[slide_col]]
    missing = [str(s) for s, p in zip(table[slide_col], paths, strict=True) if p is None]
    skip = spec.get("missing", "error") == "skip"
    if missing and not skip:
        raise FileNotFoundError(
            f"{len(missing)} slide(s) of {spec['labels']} have no features in {features_dir} "
            f"(e.g. {missing[0]}.h5);"
            " extract them or set data.missing: skip"
        )
    # a slide where tissue detection found nothing has a complete, EMPTY feature file: it cannot form a bag
    empty = [str(s) for s, p in zip(table[slide_col], paths, strict=True) if p is not None and _n_rows(p) == 0]
    if empty and not skip:
        raise ValueError(
            f"{len(empty)} slide(s) of {spec['labels']} have no tissue tiles (empty features in {features_dir}, "
            f"e.g. {empty[0]}.h5); check their tissue contours in the extraction job, re-extract with other "
            "tissue settings, or set data.missing: skip to leave them out (counted in the result)"
        )
    paths = [None if str(s) in set(empty) else p for s, p in zip(table[slide_col], paths, strict=True)]
    table = table.assign(_h5=paths).loc[[p is not None for p in paths]]
    key = case_col if level == "case" else slide_col
    if level not in ("slide", "case") or key is None:
        raise ValueError(f"data.level must be 'slide' or 'case' (case needs a case column); got {level!r}")
    groups: dict[str, list[Path]] = {}
    for bag_id, path in zip(table[key].astype(str), table["_h5"], strict=True):
        groups.setdefault(bag_id, []).append(path)
    first = table.drop_duplicates(key).set_index(table.drop_duplicates(key)[key].astype(str))
    info = {
        "features_dir": str(features_dir),
        "level": level,
        "n_missing": len(missing),
        "n_empty": len(empty),
        "bag_key": key,
        "case_column": case_col,
    }
    return first.loc[list(groups)], groups, info


def _materialise(
    groups: dict[str, list[Path]], spec: dict[str, Any]
) -> tuple[list[Tensor], Any, list[list[int]]]:
    lazy = H5Bags(groups, spec.get("max_tiles"), int(spec.get("tile_seed", 0)))
    bags, coords = lazy.load_all()
    return bags, coords, [lazy.member_sizes[i] for i in lazy.ids]


_COMMON_KEYS = {
    "kind",
    "labels",
    "features",
    "slide_column",
    "case_column",
    "level",
    "max_tiles",
    "tile_seed",
    "missing",
    "split_column",
    "fold_columns",
    "fold_column",
    "val_fold",
    "description",
    "missing_labels",
}
_SLIDE_KEYS = _COMMON_KEYS | {"label_column", "label_names"}
_SURVIVAL_KEYS = _COMMON_KEYS | {
    "time_column",
    "censorship_column",
    "event_column",
    "vital_status_column",
    "event_rate_range",
    "allow_implausible_event_rate",
}


def _check_keys(spec: dict[str, Any], known: set[str], kind: str) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(
            f"{kind} data: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _read_table(spec: dict[str, Any], ctx: TaskContext) -> tuple[pd.DataFrame, Path]:
    if "labels" not in spec or "features" not in spec:
        raise ValueError(
            "slide task data needs 'labels' (CSV) and 'features' (folder template with {encoder})"
        )
    path = _resolve(spec["labels"], ctx)
    if not path.is_file():
        raise FileNotFoundError(f"label table {path} does not exist (data.labels = {spec['labels']!r})")
    return pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".tab") else ","), path


def _meta(path: Path, info: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        **info,
        "labels_csv": str(path),
        "labels_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "max_tiles": spec.get("max_tiles"),
        "tile_seed": int(spec.get("tile_seed", 0)),
    }


def load_slide_task(spec: dict[str, Any], ctx: TaskContext) -> BagDataset:
    """Slide- or case-level classification bags from a label CSV and per-slide HDF5 features.

    Keys of ``spec`` (the suite's ``data:`` block): ``labels`` (CSV/TSV path), ``features`` (folder, may
    contain ``{encoder}``), ``slide_column`` (``slide_id``), ``case_column`` (``case_id`` when present),
    ``label_column``
    (``label``), ``label_names`` (class order; default sorted), ``level`` (``slide``/``case``), ``max_tiles``,
    ``tile_seed``, ``missing`` (``error``/``skip``) and the split keys of
    :func:`gpfm.eval.data.folds.folds_from_table`.
    """
    _check_keys(spec, _SLIDE_KEYS, "slide_h5")
    table, path = _read_table(spec, ctx)
    level = spec.get("level", "slide")
    rows, groups, info = _collect(table, spec, ctx, level)
    label_col = spec.get("label_column", "label")
    if label_col not in rows:
        raise ValueError(f"{path}: no label column {label_col!r}")
    if level == "case":
        per_case = table.groupby(info["bag_key"])[label_col].nunique()
        if (per_case > 1).any():
            raise ValueError(
                f"{path}: case {per_case[per_case > 1].index[0]} has slides with different labels"
            )
    keep = handle_missing_labels(rows[label_col].tolist(), str(spec.get("missing_labels", "error")), str(path))
    n_missing = int((~keep).sum())
    if n_missing:  # drop the bags without a label (policy "drop"; "error" raised above)
        dropped = set(rows.index[~keep].astype(str))
        rows = rows.loc[keep]
        groups = {k: v for k, v in groups.items() if str(k) not in dropped}
    values = rows[label_col].astype(str).str.strip()
    names = [str(n) for n in spec.get("label_names") or sorted(values.unique())]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{path}: labels {unknown} are not in label_names {names}")
    labels = np.array([names.index(v) for v in values])
    cases = rows[info["case_column"]].astype(str).tolist() if info["case_column"] else None
    folds = folds_from_table(rows, spec, cases)
    parts = {f"{f.name}/{part}": getattr(f, part) for f in folds or [] for part in ("train", "val", "test")}
    check_two_classes(labels, names, parts, f"{path}")
    bags, coords, sizes = _materialise(groups, spec)
    return BagDataset(
        bags,
        labels,
        list(groups),
        coords,
        names,
        cases,
        folds=folds,
        members=[[p.stem for p in g] for g in groups.values()],
        member_sizes=sizes,
        meta={**_meta(path, info, spec), "missing_labels_dropped": n_missing},
    )


def _survival_targets(table: pd.DataFrame, spec: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    time_col = spec.get("time_column", "survival_months")
    for col in (time_col,):
        if col not in table:
            raise ValueError(f"{path}: no time column {col!r}")
    if "event_column" in spec:
        event = table[spec["event_column"]].to_numpy()
    else:
        cens_col = spec.get("censorship_column", "censorship")
        if cens_col not in table:
            raise ValueError(f"{path}: no censorship column {cens_col!r} (1 = censored); or set event_column")
        event = 1 - table[cens_col].to_numpy()
    if not np.isin(event, (0, 1)).all():
        raise ValueError(
            f"{path}: event/censorship values must be 0/1; found {sorted(set(event.tolist()))[:5]}"
        )
    time = table[time_col].to_numpy(dtype=np.float64)
    if not np.isfinite(time).all() or (time < 0).any():
        raise ValueError(f"{path}: survival times must be finite and >= 0")
    return time, event.astype(np.int64)


def check_event_rate(
    event: np.ndarray, spec: dict[str, Any], source: str, vital_status: Sequence[str] | None = None
) -> float:
    """Refuse implausible event rates (a flipped censorship column, GPFM issue #9) unless overridden.

    The accepted range is ``spec["event_rate_range"]`` (default [0.02, 0.85]: TCGA overall-survival cohorts
    lie
    between ~0.1 (BRCA) and ~0.8 (GBM), so a flipped BRCA, 0.88, is refused); ``allow_implausible_event_rate:
    true`` skips the check. When a ``vital_status`` column is given, events must be exactly the ``Dead``
    cases.
    """
    rate = float(np.mean(event))
    lo, hi = spec.get("event_rate_range", (0.02, 0.85))
    if not (lo <= rate <= hi) and not spec.get("allow_implausible_event_rate", False):
        raise ValueError(
            f"{source}: event rate {rate:.3f} is outside [{lo}, {hi}]; is the censorship column flipped "
            "(1 must mean censored)? Set allow_implausible_event_rate: true if the rate is real"
        )
    if vital_status is not None:
        dead = np.array([str(v).strip().lower() == "dead" for v in vital_status])
        disagree = int((dead != event.astype(bool)).sum())
        if disagree:
            raise ValueError(f"{source}: {disagree} case(s) where the event disagrees with vital_status")
    return rate


def load_survival_task(spec: dict[str, Any], ctx: TaskContext) -> BagDataset:
    """Case-level (default) survival bags from a clinical CSV and per-slide HDF5 features.

    Keys as :func:`load_slide_task` plus ``time_column`` (``survival_months``), ``censorship_column``
    (``censorship``, 1 = censored) or ``event_column`` (1 = event), ``vital_status_column`` (checked against
    the
    events when given), ``event_rate_range`` / ``allow_implausible_event_rate``. Splits stratify on the event.
    """
    _check_keys(spec, _SURVIVAL_KEYS, "survival_h5")
    table, path = _read_table(spec, ctx)
    level = spec.get("level", "case")
    rows, groups, info = _collect(table, spec, ctx, level)
    time_all, event_all = _survival_targets(table, spec, path)
    if level == "case":
        check = table.assign(_t=time_all, _e=event_all).groupby(info["bag_key"])[["_t", "_e"]].nunique()
        bad = check[(check > 1).any(axis=1)]
        if len(bad):
            raise ValueError(f"{path}: case {bad.index[0]} has slides with different survival time/event")
    time, event = _survival_targets(rows, spec, path)
    vs_col = spec.get("vital_status_column")
    rate = check_event_rate(event, spec, str(path), rows[vs_col].tolist() if vs_col else None)
    bags, coords, sizes = _materialise(groups, spec)
    cases = rows[info["case_column"]].astype(str).tolist() if info["case_column"] else None
    meta = {**_meta(path, info, spec), "event_rate": rate}
    return BagDataset(
        bags,
        None,
        list(groups),
        coords,
        None,
        cases,
        time=time,
        event=event,
        folds=folds_from_table(rows, spec, cases),
        members=[[p.stem for p in g] for g in groups.values()],
        member_sizes=sizes,
        meta=meta,
    )
