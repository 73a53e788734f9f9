"""Train/val/test splits that keep duplicates and user groups on one side, and the split hash.

Splitting happens at the level of *groups*: items that share a content hash (byte-identical images, common in
LC25000 and other augmented sets) or a user-given group (patient, slide, source image) are merged by
union-find, so a group never straddles two splits. Groups are assigned per class stratum (the group's
majority label): within each stratum the groups are shuffled with the seed and filled into test, then val,
until each reaches its share of that stratum's items; the rest is train. The result is deterministic for a
given (ids, labels, groups, seed, sizes).

Every split is fingerprinted by :func:`split_hash` (SHA-256 over sorted ``id<TAB>split`` lines), which is
stored next to every result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def normalize_split_name(value: str, where: str = "split column") -> str:
    """Map ``train/val/valid/validation/test`` (any case) to ``train``/``val``/``test``."""
    name = _ALIASES.get(str(value).strip().lower())
    if name is None:
        raise ValueError(
            f"{where}: unknown split value {value!r}; use train, val (or valid/validation) or test"
        )
    return name


def dihedral_average_hash(image) -> str:
    """Rotation/flip-invariant 8×8 average hash: the smallest aHash over the 8 dihedral transforms.

    Sets augmented by rotating and flipping source images (LC25000) give the same hash for the copies of one
    source image; pass it to :func:`merge_groups` beside the content hash. ``image`` is a path or a PIL image.
    """
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.open(image)
    a0 = np.asarray(img.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    codes = []
    for k in range(4):
        for flip in (False, True):
            a = np.rot90(a0, k)
            a = a[:, ::-1] if flip else a
            codes.append("".join("1" if v else "0" for v in (a > a.mean()).ravel()))
    return min(codes)


def merge_groups(*keys: Sequence[str] | None) -> np.ndarray:
    """Union-find over several grouping keys: items sharing any key value end up in one group.

    Args:
        keys: per-item key sequences (e.g. content hashes, patient ids); None entries are ignored, and an
            empty string means "no group" for that key.

    Returns:
        (N,) int group ids, numbered by first occurrence.
    """
    present = [list(k) for k in keys if k is not None]
    if not present:
        raise ValueError("merge_groups needs at least one key sequence")
    n = len(present[0])
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key in present:
        if len(key) != n:
            raise ValueError(f"group keys differ in length ({len(key)} vs {n})")
        first: dict[str, int] = {}
        for i, value in enumerate(key):
            if value == "" or value is None:
                continue
            j = first.setdefault(str(value), i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[ri] = rj
    roots = [find(i) for i in range(n)]
    numbering: dict[int, int] = {}
    return np.array([numbering.setdefault(r, len(numbering)) for r in roots], dtype=np.int64)


def stratified_group_split(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    test_size: float = 0.3,
    val_size: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Assign every item to ``train``/``val``/``test`` without splitting a group, stratified by class.

    Args:
        labels: (N,) integer labels.
        groups: (N,) group ids (None = every item its own group).
        test_size: fraction of each class stratum for test (0 = no test split).
        val_size: fraction of each class stratum for val (0 = no val split).
        seed: shuffling seed.

    Returns:
        (N,) array of split names.

    Raises:
        ValueError: sizes outside [0, 1) or summing to ≥ 1.
    """
    if not (0 <= test_size < 1 and 0 <= val_size < 1 and test_size + val_size < 1):
        raise ValueError(
            f"split sizes test_size={test_size}, val_size={val_size} must be in [0, 1) and sum below 1"
        )
    labels = np.asarray(labels)
    n = len(labels)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    uniq, group_index = np.unique(groups, return_inverse=True)
    # a group's stratum is its most frequent label (lowest label on ties)
    counts = np.zeros((len(uniq), int(labels.max()) + 1 if n else 1), dtype=np.int64)
    np.add.at(counts, (group_index, labels), 1)
    stratum = counts.argmax(1)
    sizes = counts.sum(1)
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(uniq), dtype=object)
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        members = members[rng.permutation(len(members))]
        total = sizes[members].sum()
        want = {"test": test_size * total, "val": val_size * total}
        filled = {"test": 0, "val": 0}
        for g in members:
            target = "train"
            for name in ("test", "val"):
                # take the group while the share is not yet met (rounding to the nearest item count)
                if want[name] > 0 and filled[name] + sizes[g] / 2 <= want[name]:
                    target = name
                    break
            if target != "train":
                filled[target] += sizes[g]
            assignment[g] = target
    return assignment[group_index].astype(str)


def carve_val(
    split: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, val_size: float, seed: int
) -> np.ndarray:
    """Move a stratified, group-respecting ``val_size`` share of the train items into ``val``."""
    split = np.asarray(split).astype(object)
    train = np.flatnonzero(split == "train")
    if not len(train) or val_size <= 0:
        return split.astype(str)
    sub = stratified_group_split(
        np.asarray(labels)[train],
        None if groups is None else np.asarray(groups)[train],
        test_size=val_size,
        val_size=0.0,
        seed=seed,
    )
    split[train[sub == "test"]] = "val"
    return split.astype(str)


def split_hash(ids: Sequence[str], split: Sequence[str]) -> str:
    """SHA-256 over the sorted ``id<TAB>split`` lines: identical splits hash alike whatever the row order."""
    lines = sorted(f"{i}\t{s}" for i, s in zip(ids, split, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def straddling_groups(split: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Group ids that occur in more than one split."""
    pairs = np.unique(np.stack([np.asarray(groups).astype(str), np.asarray(split).astype(str)]), axis=1)
    group_of_pair, n_sides = np.unique(pairs[0], return_counts=True)
    return group_of_pair[n_sides > 1]


def check_groups_disjoint(split: np.ndarray, groups: np.ndarray) -> None:
    """Raise if any group occurs in more than one split (a guard for user-provided CSV splits)."""
    leaking = straddling_groups(split, groups)
    if len(leaking):
        g = str(leaking[0])
        sides = sorted(set(np.asarray(split).astype(str)[np.asarray(groups).astype(str) == g].tolist()))
        raise ValueError(
            f"group {g!r} (and {len(leaking) - 1} more) appears in splits {sides}: one patient or source "
            "image on both sides leaks labels; fix the split column or use split method group_hash"
        )
