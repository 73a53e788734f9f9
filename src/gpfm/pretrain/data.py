"""Pretraining data: tile sources, the resumable sharded sampler and the multi-crop collate.

The data is a pure function of the sample index: ``dataset[i]`` augments tile i with the seed
:func:`sample_seed` ``(base_seed, i)``, and :func:`collate_multicrop` draws the iBOT masks from a generator
seeded by the batch's sample seeds. The :class:`InfiniteShardedSampler` alone decides which indices a rank
sees, and it can restart at any position, so a resumed run sees exactly the batches of an uninterrupted one.

Sources:
    :class:`TileFolderDataset` — image files (jpg/jpeg/png/tif/tiff): a folder (scanned recursively), a list
    of paths, a text file with one path per line, or an upstream-style JSON index ``{dir: [file names]}``.
    :class:`SlideTileDataset` — slides plus the coordinate HDF5 files of :mod:`gpfm.wsi`, read on the fly.

A tile that fails to load or augment is replaced by the fixed fallback tile (the first readable tile of
the source, decoded once at start-up), and its identity is logged and appended to ``failure_log``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from gpfm.models.transforms import to_rgb

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
Augmentation = Callable[[Image.Image, int], dict[str, list[torch.Tensor]]]


def sample_seed(base_seed: int, index: int) -> int:
    """The augmentation seed of sample ``index``: 63 bits of ``SeedSequence((base_seed, index))``."""
    state = np.random.SeedSequence((int(base_seed), int(index))).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and numpy's global RNGs from the worker's torch seed.

    The augmentation does not use them (it is seeded per sample), but third-party decoders might.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class _FailureRecorder:
    """Logs unreadable tiles and appends ``time<TAB>tile<TAB>error`` lines to an optional file."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self.count = 0

    def record(self, tile: str, error: BaseException) -> None:
        self.count += 1
        message = f"{type(error).__name__}: {str(error).strip()}".replace("\n", " ")
        log.warning("pretraining tile %s failed (%s); using the fallback tile", tile, message)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:  # one short O_APPEND write per failure
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{tile}\t{message}\n")


class _MultiCropTileDataset(Dataset):
    """Shared logic: load tile i, augment it with its seed, fall back on failure."""

    def __init__(
        self, augmentation: Augmentation, base_seed: int, failure_log: str | os.PathLike[str] | None
    ):
        self.augmentation = augmentation
        self.base_seed = int(base_seed)
        self.failures = _FailureRecorder(failure_log)
        self._fallback: Image.Image | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Image.Image:
        """Tile ``index`` as an RGB PIL image (raises on failure)."""
        raise NotImplementedError

    def tile_name(self, index: int) -> str:
        """A readable identity of tile ``index`` for logs."""
        raise NotImplementedError

    def _init_fallback(self, max_tries: int = 16) -> None:
        errors = []
        for i in range(min(len(self), max_tries)):
            try:
                self._fallback = self.load(i)
                return
            except Exception as exc:  # noqa: BLE001 - any decoder error means "try the next tile"
                errors.append(f"{self.tile_name(i)}: {exc}")
        raise RuntimeError(
            "no readable tile among the first tiles of the source to serve as fallback: "
            + "; ".join(errors or ["the source is empty"])
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        seed = sample_seed(self.base_seed, index)
        failed = False
        try:
            out = self.augmentation(self.load(index), seed)
        except Exception as exc:  # noqa: BLE001 - any load/augment failure → fallback tile
            self.failures.record(self.tile_name(index), exc)
            out = self.augmentation(self._fallback, seed)
            failed = True
        return {**out, "index": index, "seed": seed, "failed": failed}


def _list_tiles(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if not isinstance(source, str | os.PathLike):
        return [Path(p) for p in source]
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: tile source not found (give a folder, a list of paths, a .txt list or a JSON index)"
        )
    if path.suffix.lower() == ".json":
        index = json.loads(path.read_text())
        if not isinstance(index, Mapping):
            raise ValueError(f"{path}: a JSON tile index must map a folder to a list of file names")
        return [Path(folder) / name for folder, names in index.items() for name in names]
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [Path(line) for line in lines if line and not line.startswith("#")]


class TileFolderDataset(_MultiCropTileDataset):
    """Multi-crop samples from image tiles on disk.

    Args:
        paths_or_root: a folder (recursive, sorted), a sequence of paths, a ``.txt`` file of paths, or a
            ``.json`` index ``{folder: [file names]}`` (the upstream layout).
        augmentation: ``(PIL image, seed) -> crops dict``, e.g.
            :class:`~gpfm.pretrain.augment.MultiCropAugmentation`.
        base_seed: seed of the per-sample seeds.
        failure_log: optional file to which failing tiles are appended.
    """

    def __init__(
        self,
        paths_or_root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        augmentation: Augmentation,
        base_seed: int = 0,
        *,
        failure_log: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(augmentation, base_seed, failure_log)
        self.paths = _list_tiles(paths_or_root)
        if not self.paths:
            raise ValueError(f"{paths_or_root}: no tiles with extensions {', '.join(IMAGE_EXTENSIONS)} found")
        self._init_fallback()

    def __len__(self) -> int:
        return len(self.paths)

    def tile_name(self, index: int) -> str:
        """The file path of tile ``index``."""
        return str(self.paths[index])

    def load(self, index: int) -> Image.Image:
        """Decode tile ``index`` as RGB (transparency composited on white)."""
        with Image.open(self.paths[index]) as image:
            image.load()
            return to_rgb(image)


class _SlideEntry:
    """One slide of a :class:`SlideTileDataset`: its coordinates and how to read a tile."""

    def __init__(self, slide_path: Path, coords_path: Path) -> None:
        from gpfm.wsi import read_coords

        self.slide_path, self.coords_path = slide_path, coords_path
        self.coords, attrs = read_coords(coords_path)
        try:
            self.read_level = int(attrs["read_level"])
            self.read_size = int(attrs["read_size_px"])
            self.tile_px = int(attrs["tile_px"])
            self.fov_um = float(attrs["fov_um"])
            self.mpp0 = float(attrs["mpp_level0_x"])
            self.background = np.asarray(attrs.get("background_rgb", (255, 255, 255)), dtype=np.uint8)
        except KeyError as exc:
            raise ValueError(
                f"{coords_path}: coordinates file lacks attribute {exc}; write it with gpfm.wsi "
                "(gpfm extract / tile_slide + write_coords)"
            ) from None


class SlideTileDataset(_MultiCropTileDataset):
    """Multi-crop samples read on the fly from slides through the coordinate files of :mod:`gpfm.wsi`.

    Tile i of a slide is read as ``slide.read_region_safe(x, y, read_level, (read_size_px,)*2)`` with the
    values stored in its coordinates file, the part of an edge tile past the slide painted with the stored
    ``background_rgb`` (exactly as feature extraction reads it), then resized with
    antialiased bicubic to the output size: ``tile_px`` of the tiling (its exact µm/px) when ``mpp`` is None,
    else ``round(fov_um / mpp)`` px. Slides are opened lazily in each worker process (an LRU cache of
    ``max_open_slides`` handles); a read that fails even after the reader's recovery is a failed tile.

    Args:
        slides: (slide path, coordinates ``*_patches.h5`` path) pairs.
        augmentation: ``(PIL image, seed) -> crops dict``.
        base_seed: seed of the per-sample seeds.
        mpp: output µm/px (None: the tiling's target mpp).
        failure_log: optional file to which failing tiles are appended.
        max_open_slides: open slide handles kept per process.
    """

    def __init__(
        self,
        slides: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
        augmentation: Augmentation,
        base_seed: int = 0,
        mpp: float | None = None,
        *,
        failure_log: str | os.PathLike[str] | None = None,
        max_open_slides: int = 64,
    ) -> None:
        super().__init__(augmentation, base_seed, failure_log)
        if mpp is not None and mpp <= 0:
            raise ValueError(f"mpp must be positive µm/px, got {mpp}")
        self.mpp = mpp
        self.entries = [_SlideEntry(Path(s), Path(c)) for s, c in slides]
        counts = np.array([len(e.coords) for e in self.entries], dtype=np.int64)
        if counts.sum() == 0:
            raise ValueError("the coordinate files hold no tiles")
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.max_open_slides = max_open_slides
        self._open: OrderedDict[int, Any] = OrderedDict()
        self._init_fallback()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(slide number, tile number within the slide) of global sample ``index``."""
        slide = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return slide, index - int(self.offsets[slide])

    def tile_name(self, index: int) -> str:
        """``<slide path>@(x,y)`` of tile ``index`` (level-0 top-left)."""
        s, t = self.locate(index)
        x, y = self.entries[s].coords[t].tolist()
        return f"{self.entries[s].slide_path}@({x},{y})"

    def _slide(self, s: int) -> Any:
        from gpfm.wsi import open_slide

        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        entry = self.entries[s]
        slide = open_slide(entry.slide_path, mpp=entry.mpp0, mpp_source="manifest", require_mpp=False)
        self._open[s] = slide
        while len(self._open) > self.max_open_slides:
            self._open.popitem(last=False)[1].close()
        return slide

    def load(self, index: int) -> Image.Image:
        """Read tile ``index`` from its slide and resize it to the output size (see the class docstring)."""
        from gpfm.wsi import TILE_FAILED

        s, t = self.locate(index)
        entry = self.entries[s]
        x, y = entry.coords[t].tolist()
        slide = self._slide(s)
        pixels, status = slide.read_region_safe(x, y, entry.read_level, (entry.read_size,) * 2)
        if status == TILE_FAILED:
            raise OSError(f"{entry.slide_path.name}: tile at ({x}, {y}) level {entry.read_level} unreadable")
        lw, lh = slide.level_dimensions[entry.read_level]  # an edge tile: the slide background past the edge,
        lx, ly = slide.level_origin(x, entry.read_level), slide.level_origin(y, entry.read_level)  # as extraction
        if lx + entry.read_size > lw or ly + entry.read_size > lh:
            pixels = pixels.copy()
            pixels[:, max(0, lw - lx):] = entry.background
            pixels[max(0, lh - ly):, :] = entry.background
        image = Image.fromarray(pixels)
        side = entry.tile_px if self.mpp is None else max(1, round(entry.fov_um / self.mpp))
        if image.size != (side, side):
            image = image.resize((side, side), Image.Resampling.BICUBIC)  # PIL downscaling is antialiased
        return image

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # handles are per process
        return state


class InfiniteShardedSampler(Sampler[int]):
    """An endless, seeded stream of sample indices for one rank, resumable from any position.

    The global stream is the concatenation of permutations P_0, P_1, … of range(dataset_len), P_e drawn from
    ``SeedSequence((seed, e))``; rank r takes positions r, r + W, r + 2W, … (W = world_size). The k-th index
    of rank r is therefore P_e[o] with g = k·W + r, e = g // n, o = g % n, so ``start_index`` = samples
    already consumed by this rank resumes the exact stream in O(1). Ranks never see the same position.

    Args:
        dataset_len: n.
        seed: stream seed (the same on every rank).
        rank: this process's rank.
        world_size: number of ranks W.
        start_index: samples already consumed by this rank.
    """

    def __init__(self, dataset_len: int, seed: int, rank: int = 0, world_size: int = 1, start_index: int = 0):
        if dataset_len <= 0:
            raise ValueError(f"dataset_len must be positive, got {dataset_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        self.dataset_len, self.seed = int(dataset_len), int(seed)
        self.rank, self.world_size, self.start_index = int(rank), int(world_size), int(start_index)
        self._epoch: int | None = None
        self._perm: np.ndarray | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        """P_epoch (cached for the current epoch)."""
        if self._epoch != epoch:
            rng = np.random.default_rng(np.random.SeedSequence((self.seed, int(epoch))))
            self._perm, self._epoch = rng.permutation(self.dataset_len), epoch
        return self._perm

    def index_at(self, k: int) -> int:
        """The k-th index of this rank's stream."""
        g = k * self.world_size + self.rank
        return int(self.permutation(g // self.dataset_len)[g % self.dataset_len])

    def __iter__(self) -> Iterator[int]:
        k = self.start_index
        while True:
            yield self.index_at(k)
            k += 1


def _draw_masks(
    fn: Callable[..., torch.Tensor], n_crops: int, rng_factory: Callable[[], np.random.Generator]
):
    """Call ``fn(n_crops, rng)``, or ``fn(n_crops)`` for a one-argument function that owns its randomness."""
    try:
        required = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        takes_rng = len(required) >= 2
    except (TypeError, ValueError):  # builtins without a signature: use the documented two-argument form
        takes_rng = True
    return fn(n_crops, rng_factory()) if takes_rng else fn(n_crops)


def collate_multicrop(
    samples: Sequence[Mapping[str, Any]],
    mask_generator_fn: Callable[..., torch.Tensor] | None,
    *,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Stack multi-crop samples crop-major and draw the iBOT masks of the global crops.

    Args:
        samples: B dataset samples (``global_crops``, ``local_crops``, ``seed``, ...).
        mask_generator_fn: ``(n_crops, rng) -> (n_crops, N) bool``, e.g.
            :class:`~gpfm.pretrain.masking.BatchMasker`; a one-argument ``(n_crops) -> masks`` function that
            owns its randomness is also accepted; None → no masking (``masks`` None, ``n_masked`` 0).
        rng: mask generator; default ``np.random.default_rng([seeds of the samples])`` (reproducible).

    Returns:
        ``global_crops`` (2B, 3, G, G): all samples' crop 0, then all crop 1; ``local_crops`` (nL·B, 3, L, L),
        crop-major; ``masks`` (2B, N) bool; ``n_masked`` int; ``mask_indices`` (n_masked,) flat indices into
        ``masks``; ``masks_weight`` (n_masked,) 1/n_i of each masked token's crop; ``upperbound`` (static
        bound when the mask function has ``upper_bound``); ``indices`` (B,); ``n_failed`` int; plus
        ``global_crops_geometry`` (2B, 7) and ``global_crops_clean`` when the samples carry them.
    """
    if not samples:
        raise ValueError("collate_multicrop got an empty batch")
    n_global = len(samples[0]["global_crops"])
    n_local = len(samples[0]["local_crops"])
    out: dict[str, Any] = {
        "global_crops": torch.stack([s["global_crops"][c] for c in range(n_global) for s in samples]),
        "local_crops": (
            torch.stack([s["local_crops"][c] for c in range(n_local) for s in samples])
            if n_local
            else torch.empty(0)
        ),
        "indices": torch.tensor([int(s.get("index", -1)) for s in samples]),
        "n_failed": int(sum(bool(s.get("failed", False)) for s in samples)),
    }
    if "global_crops_geometry" in samples[0]:
        out["global_crops_geometry"] = torch.stack(
            [s["global_crops_geometry"][c] for c in range(n_global) for s in samples]
        )
    if "global_crops_clean" in samples[0]:
        out["global_crops_clean"] = torch.stack(
            [s["global_crops_clean"][c] for c in range(n_global) for s in samples]
        )
    n_crops = n_global * len(samples)
    if mask_generator_fn is None:
        out.update(masks=None, n_masked=0, mask_indices=None, masks_weight=None, upperbound=0)
        return out

    def rng_factory() -> np.random.Generator:
        if rng is not None:
            return rng
        if any("seed" not in s for s in samples):
            raise ValueError("samples carry no 'seed'; pass rng= to collate_multicrop for reproducible masks")
        return np.random.default_rng([int(s["seed"]) for s in samples])

    masks = _draw_masks(mask_generator_fn, n_crops, rng_factory)
    if masks.dtype != torch.bool or tuple(masks.shape[:1]) != (n_crops,):
        raise ValueError(
            f"mask_generator_fn returned {masks.dtype} {tuple(masks.shape)}; expected ({n_crops}, N) bool"
        )
    per_crop = masks.sum(dim=1)
    weights = (1.0 / per_crop.clamp(min=1).float()).unsqueeze(1).expand_as(masks)[masks]
    upper = getattr(mask_generator_fn, "upper_bound", None)
    out.update(
        masks=masks,
        n_masked=int(per_crop.sum()),
        mask_indices=masks.flatten().nonzero().flatten(),
        masks_weight=weights,
        upperbound=int(upper(n_crops)) if callable(upper) else int(per_crop.sum()),
    )
    return out
