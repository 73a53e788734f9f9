"""On-disk cache of ROI image features: embed a dataset once per encoder, reuse it on every rerun.

Layout (one folder per key: never reuse features across recipes)::

    {cache_dir}/roi/{encoder}/{weights_sha[:12]}/{recipe}/{precision}/{dataset}/
        features.npy     (N, D) float32, row i = manifest["ids"][i]
        manifest.json    ids, content sha256 per item, labels and label names at creation, encoder metadata

* ``recipe`` = first 12 hex of SHA-256 over the encoder's preprocessing (input size, resize rule,
  interpolation, mean/std) and pooling: a different transform or pooling never hits the same entry.
* ``dataset`` = first 16 hex of SHA-256 over the sorted item ids (paths relative to the dataset root) with
  their file size and mtime (``hash_mode="stat"``, the default: cheap on 100k images) or their content
  SHA-256 (``hash_mode="content"``: survives copies that do not keep mtimes).
* Writes are atomic (temp file + rename); ``manifest.json`` is written last, so an entry without it is
  incomplete and is rebuilt.
* Every read is verified: ``manifest.json`` records the SHA-256 of the feature matrix, and an entry whose
  features no longer match it, or hold NaN/inf, is reported (one warning naming the folder) and rebuilt —
  never used.

The cache key is computed *without building the model* (weights are located and hashed, the precision is
resolved), so a cache hit on a ViT-L costs no model load.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch

from gpfm.atomic import atomic_path, write_json_atomic
from gpfm.hashing import CorruptArtifactError, array_sha256, file_digest, verify_array

if TYPE_CHECKING:
    from gpfm.models.encoder import Encoder

log = logging.getLogger(__name__)

HashMode = Literal["stat", "content"]
MANIFEST_VERSION = 2  # 2: features_sha256 recorded and verified on every read


@dataclass(frozen=True)
class CacheKey:
    """The identity of one cached feature matrix."""

    encoder: str
    weights_sha: str
    recipe: str
    precision: str
    dataset: str

    def relative_path(self) -> Path:
        """``roi/{encoder}/{weights_sha[:12]}/{recipe}/{precision}/{dataset}``."""
        return Path("roi", self.encoder, self.weights_sha[:12], self.recipe, self.precision, self.dataset)

    def as_string(self) -> str:
        """The key as one slash-separated string (recorded in provenance)."""
        return self.relative_path().as_posix()


@dataclass
class CachedFeatures:
    """Features of a dataset in the manifest's row order.

    Attributes:
        features: (N, D) float32.
        ids: (N,) item ids (paths relative to the dataset root).
        sha256: (N,) content SHA-256 of each image file (used for duplicate-aware splits).
        key: the cache key.
        path: the cache entry folder.
        reused: True when read from disk, False when freshly embedded.
        manifest: the manifest dict.
    """

    features: np.ndarray
    ids: np.ndarray
    sha256: np.ndarray
    key: CacheKey
    path: Path
    reused: bool
    manifest: dict[str, Any]


def recipe_hash(preprocess: dict[str, Any], pooling: str) -> str:
    """12 hex of SHA-256 over the preprocessing dict and the pooling name."""
    blob = json.dumps({"preprocess": preprocess, "pooling": pooling}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def dataset_hash(root: Path, ids: Sequence[str], mode: HashMode = "stat") -> str:
    """16 hex of SHA-256 over sorted ``id, size, mtime_ns`` (``stat``) or ``id, content sha256`` lines."""
    if mode not in ("stat", "content"):
        raise ValueError(f"unknown dataset hash mode {mode!r}; use 'stat' or 'content'")
    lines = []
    for item in sorted(ids):
        path = root / item
        if mode == "stat":
            st = path.stat()
            lines.append(f"{item}\t{st.st_size}\t{st.st_mtime_ns}")
        else:
            lines.append(f"{item}\t{file_digest(path)}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def encoder_identity(
    name: str, weights: str | None = None, device: str | None = "cpu", precision: str | None = None
) -> tuple[str, str, str]:
    """(weights sha256, recipe hash, precision) of an encoder, without building the model."""
    from gpfm.models.identity import resolve_encoder

    identity = resolve_encoder(name, weights, device, precision)
    return identity.weights_sha256, recipe_hash(identity.spec.preprocess.to_dict(), identity.spec.pooling), \
        identity.precision


class ImageView(Protocol):
    """A deterministic change of every image before embedding (a stain jitter, a JPEG round trip...).

    ``name`` identifies the view in the cache key; ``apply(rgb, key)`` returns the changed RGB uint8 array and
    must depend only on the pixels and ``key`` (the item id), so a view is the same on every run.
    """

    name: str

    def apply(self, rgb: np.ndarray, key: str) -> np.ndarray:
        """The changed image."""


def embed_images(
    encoder: Encoder, paths: Sequence[Path], batch_size: int = 64, num_threads: int = 2, desc: str = "embedding",
    view: ImageView | None = None, keys: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Embed image files with the encoder's own transform; also returns each file's content SHA-256.

    Decoding and resizing run in a small thread pool (PIL releases the GIL while decoding) while the model
    embeds the previous batch. A ``view`` changes each image (keyed by ``keys[i]``, default the path) first.
    """
    from PIL import Image

    key_of = {p: (str(p) if keys is None else str(keys[i])) for i, p in enumerate(paths)}

    def load(path: Path) -> tuple[torch.Tensor, str]:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            if view is not None:
                image = Image.fromarray(view.apply(np.asarray(image.convert("RGB")), key_of[path]))
            tensor = encoder.transform(image)
        return tensor, hashlib.sha256(data).hexdigest()

    from gpfm.progress import progress_bar

    feats: list[np.ndarray] = []
    hashes: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool, progress_bar(len(paths), desc, "img") as bar:
        batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        pending = pool.map(load, batches[0]) if batches else None
        for b in range(len(batches)):
            loaded = list(pending) if pending is not None else []
            pending = pool.map(load, batches[b + 1]) if b + 1 < len(batches) else None
            feats.append(encoder.embed(torch.stack([t for t, _ in loaded])).cpu().numpy().astype(np.float32))
            hashes.extend(h for _, h in loaded)
            bar.update(len(loaded))
    dim = encoder.embed_dim
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), hashes


class RoiFeatureCache:
    """Feature cache rooted at ``cache_dir`` (see the module docstring for the layout)."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir).expanduser()

    def lookup(self, key: CacheKey) -> CachedFeatures | None:
        """The complete entry for ``key``, or None."""
        folder = self.root / key.relative_path()
        manifest_file = folder / "manifest.json"
        if not manifest_file.is_file():
            return None
        try:
            manifest = json.loads(manifest_file.read_text())
            features = np.load(folder / "features.npy", allow_pickle=False)
        except (OSError, ValueError) as err:
            log.warning("feature cache entry %s unreadable (%s); re-embedding", folder, err)
            return None
        if manifest.get("version") != MANIFEST_VERSION or features.shape[0] != len(manifest["ids"]):
            log.warning("feature cache entry %s is stale or truncated; re-embedding", folder)
            return None
        try:
            verify_array(folder / "features.npy", features, manifest.get("features_sha256"),
                         fix="the entry is rebuilt")
        except CorruptArtifactError as err:
            log.warning("%s; re-embedding", err)
            return None
        return CachedFeatures(
            features, np.array(manifest["ids"]), np.array(manifest["sha256"]), key, folder, True, manifest
        )

    def get_or_embed(
        self,
        root: Path,
        ids: Sequence[str],
        encoder: str | Encoder,
        *,
        labels: Sequence[str] | None = None,
        weights: str | None = None,
        device: str | None = "cpu",
        precision: str | None = None,
        batch_size: int = 64,
        hash_mode: HashMode = "stat",
        view: ImageView | None = None,
    ) -> CachedFeatures:
        """Features for ``root/<id>`` for every id, from the cache or embedded once and stored.

        Args:
            root: dataset root; ids are paths relative to it.
            ids: item ids; the returned rows follow the sorted ids.
            encoder: an encoder name (built only on a cache miss) or a built :class:`Encoder`.
            labels: per-id label names, recorded in the manifest for inspection.
            weights: weights path for a named encoder (None = resolve as usual).
            device: device for a named encoder.
            precision: precision for a named encoder.
            batch_size: embedding batch size.
            hash_mode: dataset fingerprint (``stat`` or ``content``).
            view: embed every image through this deterministic change (its name joins the cache key).
        """
        order = np.argsort(np.asarray(ids, dtype=str), kind="stable")
        sorted_ids = [str(ids[i]) for i in order]
        if len(set(sorted_ids)) != len(sorted_ids):
            raise ValueError(
                f"{root}: duplicate item ids in the dataset listing; every image must be listed once"
            )
        if isinstance(encoder, str):
            name = encoder
            sha, recipe, prec = encoder_identity(encoder, weights, device, precision)
        else:
            name, sha, prec = encoder.name, encoder.weights_sha256, encoder.precision
            recipe = recipe_hash(encoder.spec.preprocess.to_dict(), encoder.spec.pooling)
        dataset = dataset_hash(root, sorted_ids, hash_mode)
        if view is not None:
            dataset += "-" + hashlib.sha256(view.name.encode()).hexdigest()[:8]
        key = CacheKey(name, sha, recipe, prec, dataset)
        hit = self.lookup(key)
        if hit is not None and list(hit.ids) == sorted_ids:
            log.info("feature cache hit: %s (%d items)", key.as_string(), len(sorted_ids))
            return hit
        if isinstance(encoder, str):
            from gpfm.models import create_encoder

            encoder = create_encoder(name, weights=weights, device=device, precision=precision, verbose=False)
        start = time.perf_counter()
        features, hashes = embed_images(encoder, [root / i for i in sorted_ids], batch_size=batch_size,
                                        desc=f"embedding {len(sorted_ids)} images with {name}"
                                        + (f" ({view.name})" if view is not None else ""),
                                        view=view, keys=sorted_ids)
        verify_array(root, features, None, fix="the encoder produced NaN/inf features; try --precision fp32")
        elapsed = time.perf_counter() - start
        folder = self.root / key.relative_path()
        with atomic_path(folder / "features.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, features, allow_pickle=False)
        label_list = None if labels is None else [str(labels[i]) for i in order]
        manifest = {
            "version": MANIFEST_VERSION,
            "key": key.as_string(),
            "dataset_root": str(root),
            "hash_mode": hash_mode,
            "view": None if view is None else view.name,
            "ids": sorted_ids,
            "sha256": hashes,
            "labels": label_list,
            "shape": list(features.shape),
            "features_sha256": array_sha256(features),
            "encoder": encoder.metadata(),
            "embed_seconds": round(elapsed, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(folder / "manifest.json", manifest)
        log.info("embedded %d items with %s in %.1f s → %s", len(sorted_ids), name, elapsed, folder)
        return CachedFeatures(features, np.array(sorted_ids), np.array(hashes), key, folder, False, manifest)
