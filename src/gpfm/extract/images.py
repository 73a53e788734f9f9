"""Embed a folder (or CSV list) of tile images with any registered encoder, into HDF5 or safetensors.

Unreadable images are recorded (``failed`` in the output, with the reason) and the batch goes on; the output
is written atomically, so a partial file is never visible under its final name.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from gpfm.atomic import atomic_h5
from gpfm.errors import InputError
from gpfm.models import create_encoder
from gpfm.models.encoder import Encoder
from gpfm.wsi.h5io import FEATURES_CHUNK_ROWS, chunk_rows

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass
class ImageList:
    """Image paths (as given, resolved against ``root``), optional labels, and the folder they are named from."""

    paths: list[Path]
    names: list[str]
    labels: list[str] | None = None


def list_images(source: str | os.PathLike[str], recursive: bool = True) -> ImageList:
    """Collect images from a folder (sorted) or a CSV with a ``path`` column (optional ``label``).

    Raises:
        InputError: the source does not exist, an empty folder, or a CSV without a ``path`` column or with a
            missing path, naming the file.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: no such folder or CSV; pass a folder of tile images or a CSV")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise InputError(f"{source}: not a folder or a .csv list; pass a folder of tile images or a CSV "
                             "with a 'path' column")
        try:
            with open(source, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{source}: unreadable CSV ({exc}); save it as UTF-8 with a 'path' column") from None
        if not rows or "path" not in rows[0]:
            raise InputError(f"{source}: a CSV image list needs a 'path' column (optional 'label') and rows")
        empty = [i + 2 for i, r in enumerate(rows) if not (r.get("path") or "").strip()]
        if empty:
            raise InputError(f"{source}:{empty[0]}: empty path ({len(empty)} such rows); every row needs a path")
        base = source.parent
        paths = [Path(r["path"]) if Path(r["path"]).is_absolute() else base / r["path"] for r in rows]
        labels = [r["label"] for r in rows] if "label" in rows[0] else None
        return ImageList(paths, [r["path"] for r in rows], labels)
    pattern = "**/*" if recursive else "*"
    paths = sorted(p for p in source.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) found; check the folder")
    return ImageList(paths, [str(p.relative_to(source)) for p in paths])


class _ImageDataset(Dataset):
    def __init__(self, paths: Sequence[Path], transform, size: int) -> None:
        self.paths, self.transform, self.size = list(paths), transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        try:
            with Image.open(self.paths[i]) as img:
                return self.transform(img), i, ""
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            return torch.zeros(3, self.size, self.size), i, f"{type(exc).__name__}: {exc}"


@dataclass
class EmbedResult:
    """What :func:`embed_images` wrote."""

    out: Path
    n_images: int
    n_failed: int
    dim: int
    failed: dict[str, str] = field(default_factory=dict)


def embed_images(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    encoder: str | Encoder = "gpfm",
    *,
    weights: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int = 64,
    workers: int = 0,
    recursive: bool = True,
    progress: bool = True,
) -> EmbedResult:
    """Embed every image of ``source`` and write features, file names and encoder facts to ``out``.

    Args:
        source: folder of images (searched recursively) or CSV with ``path`` (and optional ``label``).
        out: ``.h5``/``.hdf5`` or ``.safetensors`` output path.
        encoder: registry name or an already created :class:`Encoder`.
        weights: weights path or ``"random"`` (see :func:`gpfm.models.create_encoder`).
        device: ``cpu``/``cuda``/... (None: CUDA when available).
        precision: ``fp32``/``bf16``/``fp16`` (None: the encoder's hardware default).
        batch_size: images per forward pass.
        workers: DataLoader worker processes for decoding.
        recursive: search sub-folders.
        progress: show a progress bar with images/s.

    Returns:
        An :class:`EmbedResult`; unreadable images are listed in ``failed`` and excluded from the features.
    """
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5", ".safetensors"):
        raise InputError(f"{out}: output must end in .h5, .hdf5 or .safetensors")
    images = list_images(source, recursive)  # fail fast on a bad source, before loading any weights
    enc = encoder if isinstance(encoder, Encoder) else create_encoder(encoder, weights, device, precision)
    loader = DataLoader(_ImageDataset(images.paths, enc.transform, enc.spec.preprocess.input_size),
                        batch_size=batch_size, num_workers=workers, shuffle=False)
    feats = np.zeros((len(images.paths), enc.embed_dim), dtype=np.float32)
    ok = np.zeros(len(images.paths), dtype=bool)
    failed: dict[str, str] = {}
    from tqdm.auto import tqdm

    with tqdm(total=len(images.paths), desc=f"embed {enc.name}", unit="img", disable=not progress) as bar:
        for batch, idx, errors in loader:
            feats[idx.numpy()] = enc.embed(batch).numpy()
            for i, err in zip(idx.tolist(), errors, strict=True):
                if err:
                    failed[images.names[i]] = err
                    log.warning("%s: skipped (%s)", images.paths[i], err)
                else:
                    ok[i] = True
            bar.update(len(idx))
    keep = np.flatnonzero(ok)
    meta = {**enc.metadata(), "source": str(source), "n_failed": len(failed)}
    names = [images.names[i] for i in keep]
    labels = [images.labels[i] for i in keep] if images.labels else None
    if out.suffix.lower() == ".safetensors":
        _write_safetensors(out, feats[keep], names, labels, meta, failed)
    else:
        _write_h5(out, feats[keep], names, labels, meta, failed)
    return EmbedResult(out=out, n_images=len(keep), n_failed=len(failed), dim=enc.embed_dim, failed=failed)


def _write_h5(out: Path, feats: np.ndarray, names: list[str], labels: list[str] | None, meta: dict,
              failed: dict[str, str]) -> None:
    import h5py

    str_dt = h5py.string_dtype("utf-8")
    with atomic_h5(out) as f:
        rows = chunk_rows(len(feats), FEATURES_CHUNK_ROWS)
        ds = f.create_dataset("features", data=feats, chunks=(rows, feats.shape[1]))
        f.create_dataset("filenames", data=np.array(names, dtype=object), dtype=str_dt)
        if labels is not None:
            f.create_dataset("labels", data=np.array(labels, dtype=object), dtype=str_dt)
        f.attrs["failed_json"] = json.dumps(failed)
        for key, value in meta.items():
            ds.attrs[key] = _attr_value(value)
        ds.attrs["complete"] = True


def _attr_value(value: object) -> object:
    """HDF5-safe attribute: JSON for containers, plain ``str`` for str subclasses (e.g. torch.__version__)."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)
    return value


def _write_safetensors(out: Path, feats: np.ndarray, names: list[str], labels: list[str] | None, meta: dict,
                       failed: dict[str, str]) -> None:
    from gpfm.models.checkpoints import save_safetensors_atomic

    text = {k: json.dumps(v) for k, v in meta.items()}
    text.update(filenames=json.dumps(names), failed=json.dumps(failed))
    if labels is not None:
        text["labels"] = json.dumps(labels)
    save_safetensors_atomic({"features": torch.from_numpy(feats)}, out, metadata=text)


def read_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str], dict]:
    """Read an :func:`embed_images` output: (features, file names, metadata)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            feats = f.get_tensor("features")
        return feats, meta.pop("filenames"), meta
    import h5py

    with h5py.File(path, "r", locking=False) as f:
        ds = f["features"]
        meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in ds.attrs.items()}
        names = [n.decode() if isinstance(n, bytes) else n for n in f["filenames"][()]]
        return ds[()], names, meta
