"""In-memory data of the multimodal protocols: feature bags keyed by id, paired with text records.

A *bag* is a float32 (N, D) array of tile features: a whole slide, an ARCH figure, or a single tile (N = 1).
Records carry their split; a source without a validation split gets one carved from train by group, and a
source without any split gets seeded group-level train/val/test fractions (:func:`assign_splits`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from gpfm.eval.text.readers import SPLITS, TextRecord, VqaRecord

R = TypeVar("R", TextRecord, VqaRecord)


def _record_id(rec: TextRecord | VqaRecord) -> str:
    return rec.id if isinstance(rec, TextRecord) else rec.image_id


def _group(rec: TextRecord | VqaRecord) -> str:
    return rec.group or _record_id(rec)


def _check_pairing(bags: dict[str, np.ndarray], records: Sequence[TextRecord | VqaRecord], what: str) -> None:
    if not records:
        raise ValueError(f"{what}: no records")
    missing = sorted({_record_id(r) for r in records} - set(bags))
    if missing:
        raise ValueError(
            f"{what}: {len(missing)} record id(s) have no features, e.g. {missing[:5]}; "
            f"feature ids look like {sorted(bags)[:3]}"
        )
    dims = {b.shape[1] for b in bags.values() if b.ndim == 2}
    if len(dims) != 1 or any(b.ndim != 2 or b.shape[0] == 0 for b in bags.values()):
        raise ValueError(f"{what}: every bag must be a non-empty (N, D) array with one D; found D in {dims}")
    bad = sorted({r.split for r in records} - {*SPLITS, None}, key=str)
    if bad:
        raise ValueError(f"{what}: unknown split name(s) {bad}; expected {SPLITS}")


@dataclass
class ReportTaskData:
    """Reports/captions paired with feature bags (the input of ``report.histgen``).

    Attributes:
        bags: id → float32 (N, D) features.
        records: one per (id, text); ``split`` set on every record.
        meta: provenance (text source, feature source, encoder metadata).
    """

    bags: dict[str, np.ndarray]
    records: list[TextRecord]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_pairing(self.bags, self.records, "report task")

    @property
    def dim(self) -> int:
        """Feature size D."""
        return int(next(iter(self.bags.values())).shape[1])


@dataclass
class VqaTaskData:
    """Questions paired with feature bags (the input of ``vqa.fusion``).

    Attributes:
        bags: image/slide id → float32 (N, D) features.
        records: one per question; ``split`` set on every record.
        meta: provenance.
    """

    bags: dict[str, np.ndarray]
    records: list[VqaRecord]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_pairing(self.bags, self.records, "VQA task")

    @property
    def dim(self) -> int:
        """Feature size D."""
        return int(next(iter(self.bags.values())).shape[1])


def _unit_hash(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(records: Sequence[R], fractions: dict[str, float], seed: int = 0) -> list[R]:
    """Give every record a split by hashing its group: deterministic, group-disjoint, order-independent.

    Args:
        records: records whose ``split`` is replaced.
        fractions: e.g. ``{"train": 0.7, "val": 0.1, "test": 0.2}`` (must sum to 1).
        seed: changes the assignment.
    """
    if set(fractions) - set(SPLITS) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must use {SPLITS} and sum to 1, got {fractions}")
    edges, acc = [], 0.0
    for name in SPLITS:
        acc += fractions.get(name, 0.0)
        edges.append((acc, name))
    out = []
    for rec in records:
        u = _unit_hash(_group(rec), seed)
        out.append(replace(rec, split=next((name for edge, name in edges if u < edge), edges[-1][1])))
    return out


def ensure_val_split(records: Sequence[R], val_fraction: float, seed: int) -> tuple[list[R], bool]:
    """Records with a val split: unchanged if one exists, else ``val_fraction`` of train groups moved to val.

    Returns:
        the records and whether a val split was carved.
    """
    splits = {r.split for r in records}
    if None in splits:
        raise ValueError(
            "some records have no split; assign splits first (data.split fractions in the suite)"
        )
    if "test" not in splits or "train" not in splits:
        raise ValueError(f"records need train and test splits (found {sorted(splits)}); never select on test")
    if "val" in splits:
        return list(records), False
    carved = [
        replace(r, split="val")
        if r.split == "train" and _unit_hash(_group(r), seed + 1) < val_fraction
        else r
        for r in records
    ]
    if not any(r.split == "val" for r in carved) or not any(r.split == "train" for r in carved):
        raise ValueError(f"val_fraction {val_fraction} left train or val empty; too few training groups")
    return carved, True


def collate_bags(bags: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Pad bags to (B, N_max, D) float32 with a (B, N_max) bool mask (True = real tile)."""
    n_max = max(b.shape[0] for b in bags)
    feats = torch.zeros(len(bags), n_max, bags[0].shape[1])
    mask = torch.zeros(len(bags), n_max, dtype=torch.bool)
    for i, b in enumerate(bags):
        feats[i, : b.shape[0]] = torch.from_numpy(np.asarray(b, dtype=np.float32))
        mask[i, : b.shape[0]] = True
    return feats, mask


def cap_bag(bag: np.ndarray, max_tiles: int | None, key: str, seed: int) -> np.ndarray:
    """Keep a seeded random subset of at most ``max_tiles`` rows (in original order) of one bag."""
    if max_tiles is None or bag.shape[0] <= max_tiles:
        return bag
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big"))
    return bag[np.sort(rng.choice(bag.shape[0], size=max_tiles, replace=False))]


def inference_chunks(bag_sizes: Sequence[int], max_items: int, tile_budget: int = 1 << 18) -> list[slice]:
    """Consecutive chunks of at most ``max_items`` items within a padded-size budget.

    A chunk's padded size (items × largest bag) stays within ``tile_budget`` rows (a single larger bag gets
    a chunk of its own), so slide-level bags of thousands of tiles never pad into gigabytes.
    """
    chunks, start, longest = [], 0, 0
    for i, n in enumerate(bag_sizes):
        longest_if_added = max(longest, n)
        if i > start and ((i - start + 1) * longest_if_added > tile_budget or i - start >= max_items):
            chunks.append(slice(start, i))
            start, longest_if_added = i, n
        longest = longest_if_added
    if len(bag_sizes) > start:
        chunks.append(slice(start, len(bag_sizes)))
    return chunks
