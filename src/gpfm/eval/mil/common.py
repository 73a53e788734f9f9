"""What the slide-level protocols (MIL classification, survival) share: folds, attention files, provenance."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpfm.atomic import atomic_h5
from gpfm.eval.data.bags import BagDataset
from gpfm.eval.data.folds import FoldSplit, make_folds, split_hash, with_validation
from gpfm.eval.protocol import Protocol


def check_bags(protocol: Protocol, data: Any, *, survival: bool) -> BagDataset:
    """Type and target checks with one clear error line."""
    kind = "survival_h5" if survival else "slide_h5"
    if not isinstance(data, BagDataset):
        raise TypeError(
            f"protocol {protocol.name} takes a BagDataset (task kind {kind}); got {type(data).__name__}"
        )
    if survival and (data.time is None or data.event is None):
        raise ValueError(
            f"protocol {protocol.name} needs survival time and event (use task kind survival_h5)"
        )
    if not survival and data.labels is None:
        raise ValueError(f"protocol {protocol.name} needs class labels (use task kind slide_h5)")
    return data


def resolve_folds(
    data: BagDataset,
    strata: np.ndarray,
    *,
    n_folds: int,
    val_fraction: float,
    split_seed: int,
    val_equals_test: bool = False,
) -> list[FoldSplit]:
    """The task's folds (or stratified case-grouped ones), each with validation; val == test only if asked."""
    folds = data.folds or make_folds(strata, data.cases, n_folds, val_fraction, split_seed)
    out = []
    for k, fold in enumerate(folds):
        if val_equals_test:
            fold = FoldSplit(fold.name, np.union1d(fold.train, fold.val), fold.test, fold.test)
        else:
            fold = with_validation(fold, strata, data.cases, val_fraction, split_seed + k)
        fold.check(data.cases, allow_val_equals_test=val_equals_test)
        out.append(fold)
    return out


def write_attention(path: Path, data: BagDataset, scores: dict[str, np.ndarray]) -> dict[str, str]:
    """Write ``attention`` (one float32 dataset per bag id) and ``attention_coords`` (row-aligned coords).

    Case-level bags carry the attributes ``members`` (slide ids) and ``member_sizes`` (their tile counts, in
    order), so a case's scores can be split back into per-slide heatmaps.

    Returns:
        The artifact kinds written → file names.
    """
    rows = {bag_id: i for i, bag_id in enumerate(data.ids)}
    with atomic_h5(path) as fh:
        for bag_id in data.ids:
            if bag_id not in scores:
                continue
            ds = fh.create_dataset(bag_id, data=np.asarray(scores[bag_id], dtype=np.float32))
            i = rows[bag_id]
            if data.members is not None:
                ds.attrs["members"] = data.members[i]
            if data.member_sizes is not None:
                ds.attrs["member_sizes"] = data.member_sizes[i]
    written = {"attention": path.name}
    if data.coords is not None:
        cpath = path.with_name(path.stem + "_coords.h5")
        with atomic_h5(cpath) as fh:
            for bag_id in data.ids:
                if bag_id in scores:
                    fh.create_dataset(bag_id, data=np.asarray(data.coords[rows[bag_id]], dtype=np.int64))
        written["attention_coords"] = cpath.name
    return written


def save_model(out_dir: Path, fold: str, model: torch.nn.Module, aggregator: str, options: dict[str, Any],
               in_dim: int, n_outputs: int, outputs: list[str], encoder: str, kind: str) -> str:
    """Save a trained aggregator (``model_<fold>.pt``): its weights and what is needed to rebuild it.

    ``gpfm heatmap --source attention --model FILE`` loads it to draw attention on ANY slide embedded with the same
    encoder, not only the bags this run tested.
    """
    name = f"model_{fold}.pt"
    record = {"aggregator": aggregator, "options": dict(options), "in_dim": int(in_dim), "n_outputs": int(n_outputs),
              "outputs": list(outputs), "encoder": encoder, "kind": kind,
              "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    torch.save(record, Path(out_dir) / name)
    return name


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model` (weights-only load) and return it with its record."""
    from gpfm.eval.mil import create_aggregator

    record = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = create_aggregator(record["aggregator"], in_dim=record["in_dim"], n_outputs=record["n_outputs"],
                              **record["options"])
    model.load_state_dict(record["state_dict"], strict=True)
    return model.eval(), record


def apply_model(model: torch.nn.Module, features: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """One bag through a loaded aggregator: ``(attention (N,) or None, logits (K,))``."""
    with torch.inference_mode():
        out = model(torch.as_tensor(np.asarray(features, dtype=np.float32)))
    attention = None if out.attention is None else out.attention.float().numpy().reshape(-1)
    return attention, out.logits.float().numpy().reshape(-1)


def slide_provenance(
    protocol: Protocol, data: BagDataset, folds: list[FoldSplit], **extra: Any
) -> dict[str, Any]:
    """Protocol id, split hash and counts, bag sizes, data meta, code and library versions."""
    from gpfm.eval.data.roi import code_version

    sizes = np.array([b.shape[0] for b in data.bags])
    return {
        "protocol_id": f"{protocol.name}@{protocol.version}",
        "code_version": code_version(),
        "split_hash": split_hash(folds, data.ids),
        "splits": [
            {"name": f.name, "train": len(f.train), "val": len(f.val), "test": len(f.test)} for f in folds
        ],
        "n_bags": len(data),
        "feature_dim": data.dim,
        "tiles_per_bag": {
            "min": int(sizes.min()),
            "median": float(np.median(sizes)),
            "max": int(sizes.max()),
        },
        "data": data.meta,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **extra,
    }
