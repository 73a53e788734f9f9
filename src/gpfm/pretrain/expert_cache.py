"""Cached expert targets (``distill.expert_targets=cached``): each expert runs once per tile, not once per step.

With ``expert_view=clean`` nothing the experts see needs to change between steps, so each expert sees one fixed
view of each tile — the whole clean tile, resized (bicubic, antialiased) to ``expert_cache_size`` (default: the
expert's own input size) and normalised as the student's crops — and its targets are stored once:

    <cache>/<expert>-<weights sha256[:16]>-<input_norm>-<size>px.h5
        tiles  (N,) utf-8     tile identity (``dataset.tile_name``), the row key
        cls    (N, D_cls)     float32, the CLS target of the tile
        patch  (N, h, w, D)   float16/float32, the expert's feature map of the tile (when it has a patch target)
        attrs  expert, weights_sha256, input_norm, size, student_mean/std, grid, dtype, created

A step looks targets up by the batch's sample indices. The CLS target is the tile's; the patch target is the
tile's feature map cut to each global crop (``torchvision.ops.roi_align`` on the crop's box, in feature-map
coordinates with pixel centres at +0.5), then flipped and rotated as the crop was (``global_crops_geometry``),
on the grid the live expert would give for a global crop. At GPFM scale this removes three ViT forwards per step
(UNI, Phikon, CONCH at 224 px: ≈ 3 × 61 GFLOPs per image); the experts are freed after the files are written.

A file is reused only when its tile list covers the dataset and its attributes match the expert's identity;
anything else is rebuilt into a temp file and renamed (a killed build leaves nothing that could be taken for
complete). In a distributed run rank 0 builds and the others wait at a barrier.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from gpfm.atomic import atomic_path, ensure_free_space
from gpfm.models.spec import IMAGENET_MEAN, IMAGENET_STD
from gpfm.models.transforms import to_rgb
from gpfm.pretrain.experts import Expert, ExpertTargets

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_STORE_DTYPES = {"fp16": np.float16, "fp32": np.float32}


def tile_view(image: Image.Image, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """The fixed clean view of a tile the experts see: RGB, resized to ``size``², student-normalised (3, S, S)."""
    image = to_rgb(image)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return TF.normalize(TF.to_tensor(image), list(mean), list(std))


def crop_feature_map(fmap: torch.Tensor, geometry: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Cut each crop's box out of its tile's feature map and flip/rotate it as the crop was.

    Args:
        fmap: (B, D, h, w) feature maps of the whole tiles.
        geometry: (B, 7) rows ``[top, left, height, width, hflip, vflip, rot90]`` (fractions of the tile;
            :data:`gpfm.pretrain.augment.GEOMETRY_FIELDS`).
        grid: (gh, gw) output grid.

    Returns:
        (B, gh·gw, D) tokens row-major on ``grid``.
    """
    from torchvision.ops import roi_align

    b, _, h, w = fmap.shape
    g = geometry.to(fmap.device, torch.float32)
    top, left, height, width = g[:, 0] * h, g[:, 1] * w, g[:, 2] * h, g[:, 3] * w
    boxes = torch.stack([torch.arange(b, device=fmap.device, dtype=torch.float32), left, top, left + width,
                         top + height], dim=1)
    out = roi_align(fmap.float(), boxes, output_size=grid, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    rows = []
    for i in range(b):
        x = out[i]
        if g[i, 4] > 0.5:
            x = x.flip(-1)
        if g[i, 5] > 0.5:
            x = x.flip(-2)
        k = int(round(float(g[i, 6])))
        if k % 4:
            x = torch.rot90(x, k, dims=(-2, -1))  # counter-clockwise, as PIL's rotate(90·k)
        rows.append(x)
    return torch.stack(rows).flatten(2).transpose(1, 2)


def cache_file_name(expert: Expert, size: int) -> str:
    """``<expert>-<sha16>-<input_norm>-<size>px.h5``: one file per expert identity and view size."""
    sha = (expert.encoder.weights_sha256 or "random")[:16]
    return f"{expert.name.replace(':', '_').replace('/', '_')}-{sha}-{expert.input_norm}-{size}px.h5"


class CachedExpert:
    """Targets of one expert read from its cache file (same attributes as :class:`~gpfm.pretrain.experts.Expert`).

    Args:
        path: the cache file.
        tile_names: the dataset's tile identities; row ``i`` of a batch index ``i`` is looked up by name.
        grid: the patch grid the live expert gives for one global crop.
        device: where targets are returned.
    """

    def __init__(self, path: str | os.PathLike[str], tile_names: list[str], grid: tuple[int, int] | None,
                 device: str | torch.device = "cpu") -> None:
        import h5py

        self.path = Path(path)
        with h5py.File(self.path, "r") as h5:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in h5["tiles"][:]]
            self.attrs = {k: _plain(v) for k, v in h5.attrs.items()}
            row_of = {n: r for r, n in enumerate(names)}
            missing = [n for n in tile_names if n not in row_of]
            if missing:
                raise ValueError(f"{self.path}: {len(missing)} tiles of the dataset are not cached (first: "
                                 f"{missing[0]}); delete the file to rebuild it")
            order = np.asarray([row_of[n] for n in tile_names])
            # the whole cache is read once (a few hundred MB at experiment scale); rows follow the dataset's order
            self._cls = torch.from_numpy(h5["cls"][:][order])
            self._patch = torch.from_numpy(h5["patch"][:][order]) if "patch" in h5 else None
        self.name = str(self.attrs["expert"])
        self.cls_dim = int(self._cls.shape[1])
        self.has_patch_target = self._patch is not None
        self.patch_dim = int(self._patch.shape[-1]) if self._patch is not None else None
        self.grid = grid
        self.device = torch.device(device)

    def targets(self, indices: torch.Tensor, geometry: torch.Tensor) -> ExpertTargets:
        """Targets of the 2B global crops (crop-major, as ``collate_multicrop``) of the samples ``indices``."""
        idx = indices.cpu().long()
        n_views = geometry.shape[0] // idx.shape[0]
        cls = self._cls[idx].float().repeat(n_views, 1).to(self.device)
        if self._patch is None or self.grid is None:
            return ExpertTargets(cls=cls, patch=None, grid=None)
        fmap = self._patch[idx].float().permute(0, 3, 1, 2).repeat(n_views, 1, 1, 1)
        patch = crop_feature_map(fmap, geometry.cpu(), self.grid).to(self.device)
        return ExpertTargets(cls=cls, patch=patch, grid=tuple(self.grid))

    def metadata(self) -> dict[str, Any]:
        """Identity for the run manifest: the cache file and the expert it was built from."""
        return {**{k: str(v) for k, v in self.attrs.items()}, "cache_file": str(self.path)}

    def __repr__(self) -> str:
        return f"CachedExpert({self.name}, {self.path.name}, cls_dim={self.cls_dim}, patch_dim={self.patch_dim})"


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (scalars unwrapped, arrays as lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if hasattr(value, "item") else value


def _identity(expert: Expert, size: int, dtype: str, student_mean, student_std) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "expert": expert.name,
        "weights_sha256": expert.encoder.weights_sha256 or "random",
        "input_norm": expert.input_norm,
        "conch_target": expert.conch_target,
        "size": int(size),
        "dtype": dtype,
        "student_mean": ",".join(f"{v:.6f}" for v in student_mean),
        "student_std": ",".join(f"{v:.6f}" for v in student_std),
    }


def _is_valid(path: Path, identity: dict[str, Any], tile_names: list[str]) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            for key, value in identity.items():
                if str(_plain(h5.attrs.get(key))) != str(value):
                    return False
            names = {n.decode() if isinstance(n, bytes) else str(n) for n in h5["tiles"][:]}
            return names.issuperset(tile_names) and h5["cls"].shape[0] == len(names)
    except (OSError, KeyError):
        return False


def build_expert_cache(
    expert: Expert,
    dataset,
    path: str | os.PathLike[str],
    *,
    size: int = 0,
    dtype: str = "fp16",
    batch_size: int = 32,
    student_mean=IMAGENET_MEAN,
    student_std=IMAGENET_STD,
) -> Path:
    """Write (or reuse) the cache file of ``expert`` for every tile of ``dataset`` and return its path.

    Args:
        expert: a live expert.
        dataset: a tile dataset with ``load(i)``, ``tile_name(i)`` and ``len``; an unreadable tile gets the
            targets of the dataset's fallback tile, as training would use it.
        path: the cache file.
        size: the fixed view's side (0: the expert's input size).
        dtype: storage of the patch maps (``fp16``/``fp32``).
        batch_size: tiles per expert forward.
    """
    import h5py

    if dtype not in _STORE_DTYPES:
        raise ValueError(f"unknown expert cache dtype {dtype!r}; use fp16 or fp32")
    path = Path(path)
    size = int(size or expert.spec.preprocess.input_size)
    names = [dataset.tile_name(i) for i in range(len(dataset))]
    identity = _identity(expert, size, dtype, student_mean, student_std)
    if path.exists() and _is_valid(path, identity, names):
        log.info("expert cache %s: reused (%d tiles)", path, len(names))
        return path
    probe = expert(tile_view(Image.new("RGB", (size, size)), size, student_mean, student_std)[None])
    grid = probe.grid
    per_tile = 4 * probe.cls.shape[1] + (probe.patch[0].numel() * np.dtype(_STORE_DTYPES[dtype]).itemsize
                                         if probe.patch is not None else 0)
    ensure_free_space(path, per_tile * len(names))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in identity.items():
            h5.attrs[key] = value
        h5.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        h5.create_dataset("tiles", data=np.asarray(names, dtype=object), dtype=h5py.string_dtype())
        cls_ds = h5.create_dataset("cls", (len(names), probe.cls.shape[1]), dtype=np.float32)
        patch_ds = None
        if probe.patch is not None:
            h5.attrs["grid"] = list(grid)
            patch_ds = h5.create_dataset("patch", (len(names), *grid, probe.patch.shape[-1]),
                                         dtype=_STORE_DTYPES[dtype], chunks=(1, *grid, probe.patch.shape[-1]))
        for start in range(0, len(names), batch_size):
            stop = min(start + batch_size, len(names))
            views = torch.stack([tile_view(_load(dataset, i), size, student_mean, student_std)
                                 for i in range(start, stop)])
            out = expert(views)
            cls_ds[start:stop] = out.cls.cpu().numpy()
            if patch_ds is not None:
                patch_ds[start:stop] = out.patch.cpu().reshape(stop - start, *grid, -1).numpy()
    log.info("expert cache %s: %d tiles written", path, len(names))
    return path


def _load(dataset, index: int) -> Image.Image:
    try:
        return dataset.load(index)
    except Exception as exc:  # noqa: BLE001 - any decoder error: the tile is replaced as training replaces it
        dataset.failures.record(dataset.tile_name(index), exc)
        if dataset._fallback is None:
            dataset._init_fallback()
        return dataset._fallback


def live_crop_grid(expert: Expert, crop_size: int) -> tuple[int, int] | None:
    """The patch grid the live expert gives for one ``crop_size`` global crop (None without patch target)."""
    out = expert(torch.zeros(1, 3, crop_size, crop_size))
    return None if out.grid is None else tuple(out.grid)


def cached_experts(cfg, experts: dict[str, Expert], dataset, device: torch.device, is_main: bool = True,
                   barrier=None) -> dict[str, CachedExpert]:
    """Build (rank 0) or reuse every expert's cache for ``dataset`` and return readers in config order."""
    d = cfg.distill
    folder = Path(d.expert_cache) if d.expert_cache else Path(cfg.train.output_dir) / "expert_targets"
    names = [dataset.tile_name(i) for i in range(len(dataset))]
    paths = {}
    for name, expert in experts.items():
        size = int(d.expert_cache_size or expert.spec.preprocess.input_size)
        paths[name] = folder / cache_file_name(expert, size)
        if is_main:
            build_expert_cache(expert, dataset, paths[name], size=size, dtype=d.expert_cache_dtype)
    if barrier is not None:
        barrier()
    return {
        name: CachedExpert(paths[name], names, live_crop_grid(expert, cfg.data.global_crops_size), device)
        for name, expert in experts.items()
    }
