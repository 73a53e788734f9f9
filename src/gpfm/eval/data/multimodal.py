"""Task loaders ``report_records`` and ``vqa_records``: pair text records with one encoder's features.

A suite ``data:`` block (relative paths resolve against the suite folder; ``{encoder}`` is replaced by the
encoder name)::

    data:
      kind: report_records            # or vqa_records
      format: histgen                 # report: histgen|patchgastric|arch|csv;  vqa: pathvqa|wsi_vqa|csv
      records_file: annotation.json   # or  records: {train: pvqa_train.json, val: ..., test: ...}
      splits_csv: splits_0.csv        # wsi_vqa only: the official slide split file
      split_fractions: {train: 0.7, val: 0.1, test: 0.2}   # for sources without splits (group-hashed)
      split_seed: 0
      # features: exactly one of
      features_file: feats/{encoder}.npz   # precomputed: .npz (ids, features) or .h5 (one dataset per id)
      features_dir: slides/{encoder}       # slide HDF5 bags <dir>/<id>.h5 (gpfm.eval.data.bags layout)
      images_root: images/                 # image folder <root>/<id>[.jpg|.png|...], via the ROI cache
      match: exact                    # exact | prefix (a bag = every <id>*.h5 / image: TCGA patients)
      max_tiles: 4096
      missing: error                  # error | skip  (records whose id has no features)

CSV record files: reports ``id,text[,split][,group]``; VQA ``id,question,answer[,closed][,choices][,split]
[,group]`` (``choices`` separated by ``|``; ``closed`` defaults to answer ∈ {yes, no} or choices given).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gpfm.eval.multimodal.data import ReportTaskData, VqaTaskData, assign_splits
from gpfm.eval.protocol import TaskContext
from gpfm.eval.text.readers import (
    SPLITS,
    YES_NO,
    RecordError,
    TextRecord,
    VqaRecord,
    read_arch_captions,
    read_histgen_reports,
    read_patchgastric_captions,
    read_pathvqa,
    read_wsi_vqa,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
_COMMON_KEYS = {
    "kind",
    "format",
    "records_file",
    "records",
    "split_fractions",
    "split_seed",
    "features_file",
    "features_dir",
    "images_root",
    "match",
    "max_tiles",
    "missing",
    "splits_csv",
    "hash",
}


def _path(value: str, ctx: TaskContext) -> Path:
    p = Path(str(value).replace("{encoder}", ctx.encoder)).expanduser()
    return p if p.is_absolute() else ctx.base_dir / p


def _record_files(data: dict[str, Any], ctx: TaskContext) -> list[tuple[Path, str | None]]:
    if ("records_file" in data) == ("records" in data):
        raise ValueError("data block needs exactly one of records_file (one file) or records ({split: file})")
    if "records_file" in data:
        return [(_path(data["records_file"], ctx), None)]
    files = data["records"]
    if not isinstance(files, dict) or set(files) - set(SPLITS):
        raise ValueError(f"data.records must map split names {SPLITS} to files, got {files!r}")
    return [(_path(f, ctx), s) for s, f in files.items()]


def _csv_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {','.join(required)}")
        rows = list(reader)
    for i, row in enumerate(rows):
        for col in required:
            if not (row.get(col) or "").strip():
                raise RecordError(path, i, col, "empty")
    return rows


def _csv_reports(path: Path, split: str | None) -> list[TextRecord]:
    return [
        TextRecord(r["id"], r["text"], (r.get("split") or "").strip() or split, (r.get("group") or None))
        for r in _csv_rows(path, ("id", "text"))
    ]


def _csv_vqa(path: Path, split: str | None) -> list[VqaRecord]:
    out = []
    for r in _csv_rows(path, ("id", "question", "answer")):
        choices = tuple(c.strip() for c in (r.get("choices") or "").split("|") if c.strip())
        closed_raw = (r.get("closed") or "").strip().lower()
        closed = (
            closed_raw in ("1", "true", "yes")
            if closed_raw
            else bool(choices) or r["answer"].lower() in YES_NO
        )
        out.append(
            VqaRecord(
                r["id"],
                r["question"],
                r["answer"],
                closed,
                choices,
                (r.get("split") or "").strip() or split,
                (r.get("group") or None),
            )
        )
    return out


_REPORT_READERS: dict[str, Callable[[Path, str | None], list[TextRecord]]] = {
    "histgen": lambda p, s: read_histgen_reports(p),
    "patchgastric": lambda p, s: read_patchgastric_captions(p),
    "arch": lambda p, s: read_arch_captions(p),
    "csv": _csv_reports,
}


def _read_records(data: dict[str, Any], ctx: TaskContext, vqa: bool) -> list[Any]:
    fmt = data.get("format", "csv")
    known = ("pathvqa", "wsi_vqa", "csv") if vqa else tuple(_REPORT_READERS)
    if fmt not in known:
        raise ValueError(
            f"data.format {fmt!r} unknown for {'vqa' if vqa else 'report'}_records; use one of {known}"
        )
    records: list[Any] = []
    for path, split in _record_files(data, ctx):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: records file not found")
        if fmt == "pathvqa":
            part = read_pathvqa(path, split=split)
        elif fmt == "wsi_vqa":
            part = read_wsi_vqa(
                path, _path(data["splits_csv"], ctx) if data.get("splits_csv") else None, split
            )
        elif vqa:
            part = _csv_vqa(path, split)
        else:
            part = _REPORT_READERS[fmt](path, split)
        records += part
    if any(r.split is None for r in records):
        fractions = data.get("split_fractions")
        if not fractions:
            raise ValueError(
                "some records have no split: give data.split_fractions (e.g. {train: 0.7, val: 0.1, "
                "test: 0.2}) or per-split record files"
            )
        records = assign_splits(
            records, {k: float(v) for k, v in fractions.items()}, int(data.get("split_seed", 0))
        )
    return records


def _wanted(records: list[Any]) -> dict[str, tuple[str, ...]]:
    """Bag id → member image ids (ARCH bags list their images; everything else is its own member)."""
    out: dict[str, tuple[str, ...]] = {}
    for r in records:
        rid = r.id if isinstance(r, TextRecord) else r.image_id
        out[rid] = r.members if isinstance(r, TextRecord) and r.members else (rid,)
    return out


def _from_feature_file(path: Path, wanted: dict[str, tuple[str, ...]], prefix: bool) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: features file not found")
    rows: dict[str, np.ndarray] = {}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "ids" not in z or "features" not in z:
                raise ValueError(f"{path}: an .npz features file needs arrays 'ids' and 'features' (N, D)")
            ids, feats = z["ids"].astype(str), np.asarray(z["features"], np.float32)
            if feats.ndim != 2 or len(ids) != len(feats):
                raise ValueError(
                    f"{path}: 'features' must be (N, D) with one id per row; got {feats.shape}, "
                    f"{len(ids)} ids"
                )
            for key in np.unique(ids):  # repeated ids are the tiles of one bag, kept in file order
                rows[str(key)] = feats[ids == key]
    else:
        with h5py.File(path, "r", locking=False) as fh:
            for key in fh:
                obj = fh[key]
                arr = np.asarray(obj["features"] if isinstance(obj, h5py.Group) else obj, np.float32)
                rows[key] = arr[None, :] if arr.ndim == 1 else arr
    return _assemble(rows, wanted, prefix)


def _assemble(
    rows: dict[str, np.ndarray], wanted: dict[str, tuple[str, ...]], prefix: bool
) -> dict[str, np.ndarray]:
    bags: dict[str, np.ndarray] = {}
    keys = sorted(rows)
    for bag_id, members in wanted.items():
        parts = []
        for m in members:
            hits = [k for k in keys if k.startswith(m)] if prefix else ([m] if m in rows else [])
            parts += [rows[k] for k in hits]
        if parts:
            bags[bag_id] = np.concatenate(parts).astype(np.float32, copy=False)
    return bags


def _from_h5_dir(
    folder: Path, wanted: dict[str, tuple[str, ...]], prefix: bool, max_tiles: int | None, seed: int
) -> dict[str, np.ndarray]:
    from gpfm.eval.data.bags import find_h5, read_bag

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: slide features folder not found")
    files = sorted(folder.glob("*.h5"))
    bags: dict[str, np.ndarray] = {}
    for bag_id, members in wanted.items():
        paths: list[Path] = []
        for m in members:
            if prefix:
                paths += [f for f in files if f.stem.startswith(m)]
            elif (hit := find_h5(folder, m)) is not None:
                paths.append(hit)
        if paths:
            bags[bag_id] = np.concatenate([read_bag(p, max_tiles, seed)[0].numpy() for p in paths])
    return bags


def _from_images(
    root: Path, wanted: dict[str, tuple[str, ...]], prefix: bool, data: dict[str, Any], ctx: TaskContext
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from gpfm.eval.data.cache import RoiFeatureCache

    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    files = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
    )
    stems: dict[str, set[str]] = {}  # every name a record may use for a file: path, path w/o suffix, stem
    for f in files:
        for name in (f, f.rsplit(".", 1)[0], Path(f).stem):
            stems.setdefault(name, set()).add(f)
    ambiguous = sorted(m for ms in wanted.values() for m in ms if len(stems.get(m, ())) > 1)
    if ambiguous and not prefix:
        raise ValueError(
            f"{root}: record id {ambiguous[0]!r} matches several images {sorted(stems[ambiguous[0]])[:3]}; "
            "use ids with the sub-folder (e.g. train/x.jpg)"
        )
    needed: dict[str, list[str]] = {}
    for bag_id, members in wanted.items():
        hits: list[str] = []
        for m in members:
            hits += (
                [f for f in files if Path(f).name.startswith(m) or f.startswith(m)]
                if prefix
                else sorted(stems.get(m, ()))
            )
        if hits:
            needed[bag_id] = hits
    ids = sorted({f for hits in needed.values() for f in hits})
    if not ids:
        raise ValueError(f"{root}: no image matches any record id (e.g. {next(iter(wanted), '?')!r})")
    cached = RoiFeatureCache(ctx.cache_dir).get_or_embed(
        root,
        ids,
        ctx.encoder,
        weights=ctx.weights,
        device=ctx.device,
        precision=ctx.precision,
        batch_size=ctx.batch_size,
        hash_mode=data.get("hash", "stat"),
    )
    row = {str(i): k for k, i in enumerate(cached.ids)}
    bags = {b: cached.features[[row[f] for f in hits]] for b, hits in needed.items()}
    meta = {
        "feature_cache_key": cached.key.as_string(),
        "weights_sha256": cached.key.weights_sha,
        "preprocess_recipe": cached.key.recipe,
        "precision": cached.key.precision,
        "encoder_metadata": cached.manifest.get("encoder", {}),
    }
    return bags, meta


def _load(data: dict[str, Any], ctx: TaskContext, vqa: bool) -> tuple[dict[str, np.ndarray], list[Any], dict]:
    unknown = sorted(set(data) - _COMMON_KEYS)
    if unknown:
        raise ValueError(
            f"{data.get('kind')} data block: unknown key(s) {unknown}; known: {sorted(_COMMON_KEYS)}"
        )
    records = _read_records(data, ctx, vqa)
    wanted = _wanted(records)
    sources = [k for k in ("features_file", "features_dir", "images_root") if data.get(k)]
    if len(sources) != 1:
        raise ValueError(
            f"give exactly one feature source of features_file, features_dir, images_root (got {sources})"
        )
    match = data.get("match", "exact")
    if match not in ("exact", "prefix"):
        raise ValueError(f"data.match must be exact or prefix, got {match!r}")
    prefix, max_tiles = match == "prefix", data.get("max_tiles")
    meta: dict[str, Any] = {
        "encoder": ctx.encoder,
        "text_format": data.get("format", "csv"),
        "feature_source": sources[0],
    }
    src = _path(data[sources[0]], ctx)
    if sources[0] == "features_file":
        bags = _from_feature_file(src, wanted, prefix)
        meta["features_sha256"] = hashlib.sha256(src.read_bytes()).hexdigest()
    elif sources[0] == "features_dir":
        bags = _from_h5_dir(src, wanted, prefix, max_tiles, int(data.get("split_seed", 0)))
    else:
        bags, cache_meta = _from_images(src, wanted, prefix, data, ctx)
        meta.update(cache_meta)
    missing = sorted(set(wanted) - set(bags))
    if missing:
        if data.get("missing", "error") != "skip":
            raise ValueError(
                f"{len(missing)} of {len(wanted)} record ids have no features in {src}, e.g. "
                f"{missing[:3]}; fix the ids or set data.missing: skip"
            )
        records = [r for r in records if (r.id if isinstance(r, TextRecord) else r.image_id) in bags]
        meta["skipped_ids"] = len(missing)
    meta["split_counts"] = {s: sum(r.split == s for r in records) for s in SPLITS}
    return bags, records, meta


def load_report_records(data: dict[str, Any], ctx: TaskContext) -> ReportTaskData:
    """Reports/captions paired with bags for one encoder (keys in the module docstring)."""
    bags, records, meta = _load(data, ctx, vqa=False)
    return ReportTaskData(bags, records, meta)


def load_vqa_records(data: dict[str, Any], ctx: TaskContext) -> VqaTaskData:
    """VQA records paired with bags for one encoder (keys in the module docstring)."""
    bags, records, meta = _load(data, ctx, vqa=True)
    return VqaTaskData(bags, records, meta)
