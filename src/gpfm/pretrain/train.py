"""The UNKD training loop: data → step → checkpoints/exports → metrics.

Determinism (CPU): every random choice is a function of the config seed, the rank and the iteration — data
order (sampler position = iterations × batch), crops (seeded by sample index), iBOT masks (seeded by
(seed, rank, iteration)) — except drop path, which uses the torch RNG saved in every checkpoint. Hence
N straight iterations and N/2 + resume + N/2 give bit-identical weights.

A non-finite loss or gradient norm stops the run before the optimizer step with :class:`NonFiniteLossError`;
nothing is saved after the last good checkpoint.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpfm.atomic import write_json_atomic, write_text_atomic
from gpfm.errors import EXIT_DIVERGED, GpfmError
from gpfm.pretrain.checkpoint import latest_healthy_checkpoint, load_resumable, restore_state, save_checkpoint
from gpfm.pretrain.config import PretrainConfig, dump_yaml, total_steps
from gpfm.pretrain.dist import (
    DistInfo,
    all_reduce_min_flag,
    cleanup_distributed,
    init_distributed,
    shard_teacher_like_student,
    wrap_student,
)
from gpfm.pretrain.meta_arch import MetaArch
from gpfm.pretrain.metrics_log import MetricsLogger, PhaseTimer, plot_metrics
from gpfm.pretrain.optim import apply_hyperparameters, build_optimizer, build_param_groups, clip_gradients
from gpfm.pretrain.resume import LossSpikeGuard, check_resume_config, record_config_change
from gpfm.pretrain.schedules import build_schedules
from gpfm.progress import ProgressBar

log = logging.getLogger(__name__)


class NonFiniteLossError(GpfmError, RuntimeError):
    """The loss (or a gradient norm, or the weights) became NaN/inf; the run stopped before saving them."""

    exit_code = EXIT_DIVERGED


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        run_dir: the run folder.
        iterations: iterations completed in total (including resumed ones).
        checkpoint: the last full checkpoint written, if any.
        last_record: the last metrics record.
    """

    run_dir: Path
    iterations: int
    checkpoint: Path | None
    last_record: dict[str, float]


def resolve_train_precision(precision: str, device: torch.device) -> str:
    """The training precision (:func:`gpfm.pretrain.precision.training_precision`)."""
    from gpfm.pretrain.precision import training_precision

    return training_precision(precision, device)


def build_dataset(cfg: PretrainConfig):
    """The configured tile dataset with its multi-crop augmentation (gpfm.pretrain.data / augment)."""
    from gpfm.pretrain.augment import MultiCropAugmentation
    from gpfm.pretrain.data import SlideTileDataset, TileFolderDataset

    d = cfg.data
    aug = MultiCropAugmentation(
        global_crops_scale=d.global_crops_scale,
        local_crops_scale=d.local_crops_scale,
        local_crops_number=d.local_crops_number,
        global_crops_size=d.global_crops_size,
        local_crops_size=d.local_crops_size,
        blur_semantics=d.blur_semantics,
        preset=d.aug_preset,
        clean_global_views=cfg.distill.expert_view == "clean",
    )
    failures = Path(cfg.train.output_dir) / "failed_tiles.txt"
    if d.source == "slides":
        if not d.slides:
            raise ValueError(
                "data.slides is empty; give [[slide_path, coords_h5], ...] for data.source=slides"
            )
        return SlideTileDataset(
            [tuple(s) for s in d.slides], aug, base_seed=cfg.train.seed, mpp=d.mpp, failure_log=failures
        )
    if not d.root:
        raise ValueError("data.root is not set; pass data.root=<folder of tiles or list file>")
    if not Path(d.root).exists():
        raise ValueError(f"data.root={d.root!r} does not exist (relative paths are taken from {Path.cwd()})")
    return TileFolderDataset(d.root, aug, base_seed=cfg.train.seed, failure_log=failures)


def batch_stream(cfg: PretrainConfig, info: DistInfo, start_iteration: int, dataset=None) -> Iterator[dict]:
    """Infinite batches for this rank, starting after ``start_iteration × batch`` samples of its stream."""
    from gpfm.pretrain.data import InfiniteShardedSampler, collate_multicrop, seed_worker

    dataset = build_dataset(cfg) if dataset is None else dataset
    b = cfg.data.batch_size_per_gpu
    sampler = InfiniteShardedSampler(
        len(dataset),
        seed=cfg.train.seed,
        rank=info.rank,
        world_size=info.world_size,
        start_index=start_iteration * b,
    )

    def collate(samples: list) -> dict:
        # the iBOT masks are drawn in the loop from (seed, rank, iteration), not here
        return collate_multicrop(samples, None)

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=b,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        drop_last=True,
        pin_memory=info.device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        # a private generator: creating the iterator must not consume the global torch RNG (resume)
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    yield from loader


def iteration_masks(cfg: PretrainConfig, rank: int, iteration: int, n_crops: int) -> torch.Tensor:
    """IBOT masks of one step, a pure function of (seed, rank, iteration) (switch #11)."""
    from gpfm.pretrain.masking import sample_batch_masks

    side = cfg.data.global_crops_size // cfg.student.patch_size
    rng = np.random.default_rng([cfg.train.seed, rank, iteration])
    return sample_batch_masks(
        n_crops, (side, side), cfg.data.mask_probability, cfg.data.mask_ratio_min_max, rng
    )


def _seed_everything(seed: int, rank: int) -> None:
    import random

    torch.manual_seed(seed * 1000 + rank)
    np.random.seed((seed * 1000 + rank) % 2**32)
    random.seed(seed * 1000 + rank)


def _init_student(meta: MetaArch, init: str) -> None:
    """``student.init`` = a checkpoint path: strict load of every backbone key but the mask token [I]."""
    from gpfm.models.checkpoints import CheckpointError, gpfm_to_timm, read_checkpoint

    sd, fmt = gpfm_to_timm(read_checkpoint(init))
    own = meta.student.backbone.state_dict()
    missing = [k for k in own if k not in sd and k != "mask_token"]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{init}: student init does not match (missing {missing[:10]}, "
            f"unexpected {unexpected[:10]}); check student.arch/patch_size"
        )
    meta.student.backbone.load_state_dict(sd, strict=False)
    meta.teacher.backbone.load_state_dict(meta.student.backbone.state_dict())
    log.info("student initialised from %s (%s layout); mask_token kept at its init", init, fmt)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _manifest(cfg: PretrainConfig, meta: MetaArch, info: DistInfo, precision: str, dataset) -> dict[str, Any]:
    import gpfm

    experts = {
        n: {
            "weights_sha256": getattr(getattr(e, "encoder", None), "weights_sha256", None),
            "cls_dim": e.cls_dim,
            "patch_dim": e.patch_dim,
        }
        for n, e in meta.experts.items()
    }
    return {
        "gpfm_version": gpfm.__version__,
        "torch": torch.__version__,
        "world_size": info.world_size,
        "precision": precision,
        "device": str(info.device),
        "experts": experts,
        "dataset_size": len(dataset) if dataset is not None else None,
        "student_params": sum(p.numel() for p in meta.student.parameters()),
        "config": cfg.to_dict(),
    }


def train(
    cfg: PretrainConfig,
    *,
    resume: bool = True,
    experts: dict | None = None,
    dataset=None,
    batches: Iterable[dict] | None = None,
    allow_config_change: bool = False,
) -> TrainResult:
    """Run (or resume) pretraining until ``stop_at_iteration`` or the end of the schedules.

    Args:
        cfg: resolved config.
        resume: continue from the newest checkpoint in ``train.output_dir`` when there is one.
        experts: pre-built experts by name (tests/benchmarks); None builds the configured ones.
        dataset: a pre-built dataset (None: from ``cfg.data``).
        batches: an explicit batch iterator (benchmarks); bypasses the dataset/sampler.
        allow_config_change: resume although the config differs from the checkpoint's in keys that shape the
            weights (the change is recorded in ``config_history.jsonl`` and ``config.yaml`` is rewritten).

    Raises:
        NonFiniteLossError: the loss, a gradient norm or the weights became NaN/inf (the last healthy
            checkpoint is intact).
        ResumeError: the config changed (without ``allow_config_change``), the checkpoint does not fit the
            model, or no checkpoint of the run can be read.
    """
    info = init_distributed(cfg.train.device)
    try:
        return _train(cfg, info, resume=resume, experts=experts, dataset=dataset, batches=batches,
                      allow_config_change=allow_config_change)
    finally:
        if info.started_here:  # the process group this call created is destroyed by it too
            cleanup_distributed()


def _cached_experts(cfg: PretrainConfig, info: DistInfo, experts: dict | None, dataset) -> dict:
    """Build or reuse the expert target files, then free the live experts (only the caches are used)."""
    import torch.distributed as dist

    from gpfm.pretrain.expert_cache import cached_experts
    from gpfm.pretrain.meta_arch import build_experts

    live = build_experts(cfg, info.device) if experts is None else experts
    barrier = dist.barrier if dist.is_available() and dist.is_initialized() else None
    t0 = time.perf_counter()
    cached = cached_experts(cfg, {e.name: live[e.name] for e in cfg.distill.active_experts}, dataset, info.device,
                            is_main=info.is_main, barrier=barrier)
    log.info("expert targets cached for %d tiles in %.1f s: %s", len(dataset), time.perf_counter() - t0,
             ", ".join(str(c.path) for c in cached.values()))
    return cached


def _train(
    cfg: PretrainConfig,
    info: DistInfo,
    *,
    resume: bool,
    experts: dict | None,
    dataset,
    batches: Iterable[dict] | None,
    allow_config_change: bool,
) -> TrainResult:
    """The body of :func:`train` inside an initialised (or single-process) distributed context."""
    device, run_dir = info.device, Path(cfg.train.output_dir)
    precision = resolve_train_precision(cfg.train.precision, device)
    if device.type == "cuda" and cfg.train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # identical initial weights on every rank (the EMA teacher is a local copy, so it must match too) ...
    _seed_everything(cfg.train.seed, 0)
    if cfg.distill.expert_targets == "cached" and cfg.distill.active_experts:
        dataset = build_dataset(cfg) if dataset is None else dataset
        experts = _cached_experts(cfg, info, experts, dataset)
    meta = MetaArch(cfg, device, experts=experts, precision=precision)
    # ... then per-rank generators (drop path) from here on (switch #11)
    _seed_everything(cfg.train.seed, info.rank)
    if cfg.student.init != "scratch":
        _init_student(meta, cfg.student.init)
    # separate_mlp heads have a CLS and a patch adapter; one may be unused when a term's weight is 0
    meta.set_student_wrapper(
        wrap_student(
            meta.student, info, cfg.train.parallel, find_unused=cfg.heads.distill_head == "separate_mlp"
        )
    )
    shard_teacher_like_student(meta.teacher, cfg.train.parallel, info)
    optimizer = build_optimizer(
        build_param_groups(meta.student.named_parameters(), meta.student.vit_cfg.depth, cfg.optim), cfg.optim
    )
    schedules = build_schedules(cfg, info.world_size)
    start, last_ckpt = 0, None
    loaded = load_resumable(run_dir) if resume else None
    config_changes: list[str] = []
    if loaded is not None:
        found, state = loaded
        config_changes = check_resume_config(state.get("config", {}), cfg.to_dict(), found, allow_config_change)
        restore_state(state, meta, optimizer, info.rank, info.world_size)
        start, last_ckpt = int(state["iteration"]), found
        del state
        log.info("resumed from %s at iteration %d", found, start)
    stop = total_steps(cfg)
    b = cfg.data.batch_size_per_gpu
    if batches is None:
        dataset = build_dataset(cfg) if dataset is None else dataset
        batches = batch_stream(cfg, info, start, dataset)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if loaded is None or config_changes:  # on a plain resume the recorded config still describes the run
            write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg))
            write_json_atomic(run_dir / "manifest.json", _manifest(cfg, meta, info, precision, dataset))
        if config_changes:
            record_config_change(run_dir, start, config_changes)
    logger = MetricsLogger(run_dir, enabled=info.is_main)
    if start:
        logger.truncate_after(start)  # records past the checkpoint belong to the lost tail of the killed run
    probe_set = None
    if cfg.train.probe_root and info.is_main:
        if cfg.train.parallel == "fsdp2" and info.distributed:
            raise ValueError("train.probe_root is not supported with train.parallel=fsdp2 (rank-0 forward)")
        from gpfm.pretrain.probe import load_probe_set

        probe_set = load_probe_set(
            cfg.train.probe_root, cfg.data.global_crops_size, cfg.train.probe_max_images, cfg.train.seed
        )
    timer = PhaseTimer(device)
    stream = iter(batches)
    meta.student.train()
    record: dict[str, float] = {}
    guard = LossSpikeGuard()
    bar = ProgressBar(stop - start, f"pretraining {run_dir.name} from iteration {start}", "it",
                      enabled=None if info.is_main else False)
    window_start, window_iters, window_data = time.perf_counter(), 0, 0.0
    try:
        for it in range(start, stop):
            t0 = time.perf_counter()
            batch = next(stream)
            wait = time.perf_counter() - t0
            timer.add("data", wait)
            batch = {
                k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
            }
            batch["masks"] = iteration_masks(cfg, info.rank, it, batch["global_crops"].shape[0]).to(device)
            sched = schedules.values(it)
            apply_hyperparameters(optimizer, sched["lr"], sched["last_layer_lr"], sched["wd"])
            total, terms = meta.compute(batch, sched["teacher_temp"], timer)
            if not all_reduce_min_flag(bool(torch.isfinite(total)), device):
                raise NonFiniteLossError(_nonfinite_message(it, terms, latest_healthy_checkpoint(run_dir)))
            guard.observe(it, float(total.detach()))
            with timer.phase("backward"):
                optimizer.zero_grad(set_to_none=True)
                total.backward()
            with timer.phase("optimizer"):
                norms = clip_gradients(meta.clip_modules(), cfg.optim.clip_grad)
                if not all_reduce_min_flag(all(np.isfinite(v) for v in norms.values()), device):
                    raise NonFiniteLossError(
                        _nonfinite_message(it, terms, latest_healthy_checkpoint(run_dir), norms))
                optimizer.step()
            with timer.phase("ema"):
                meta.update_teacher(sched["mom"])
            done = it + 1
            bar.update(1, loss=f"{float(total.detach()):.4g}")
            window_iters += 1
            window_data += wait
            if done % cfg.train.log_every == 0 or done == stop:
                elapsed = time.perf_counter() - window_start
                record = _record(
                    meta,
                    terms,
                    total,
                    sched,
                    norms,
                    timer,
                    window_iters,
                    elapsed,
                    window_data,
                    b * info.world_size,
                    device,
                )
                logger.log(done, record)
                window_start, window_iters, window_data = time.perf_counter(), 0, 0.0
            if done % cfg.train.checkpoint_every == 0 or done == stop:
                health = guard.verdict(meta)
                if not health["weights_finite"]:
                    raise NonFiniteLossError(
                        f"weights became non-finite by iteration {done}; not saving them. "
                        + _nonfinite_message(it, terms, latest_healthy_checkpoint(run_dir)))
                last_ckpt = save_checkpoint(
                    run_dir,
                    iteration=done,
                    meta=meta,
                    optimizer=optimizer,
                    samples_per_rank=done * b,
                    config=cfg.to_dict(),
                    extra={"world_size": info.world_size},
                    keep_last=cfg.train.keep_last,
                    is_main=info.is_main,
                    health=health,
                )
                guard.reset()
            if probe_set is not None and done % cfg.train.probe_every == 0:
                from gpfm.pretrain.probe import probe_backbone

                logger.log(done, probe_backbone(meta.teacher.backbone, probe_set, device))
            tce = cfg.train.teacher_checkpoint_every
            if tce and done % tce == 0:  # every rank joins (FSDP2 gathers shards); rank 0 writes
                from gpfm.pretrain.export import export_teacher

                export_teacher(
                    meta, run_dir / "teacher" / f"iter_{done:08d}", iteration=done, write=info.is_main
                )
    finally:
        bar.close()
        logger.close()
    if info.is_main and logger.path.is_file():
        plot_metrics(logger.path, run_dir / "curves.png")
    return TrainResult(run_dir, max(start, stop), last_ckpt, record)


def _nonfinite_message(it: int, terms: dict, ckpt: Path | None, norms: dict | None = None) -> str:
    values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
    where = f"grad norms {norms}" if norms else "loss"
    keep = f"the last healthy checkpoint {ckpt} is intact" if ckpt else "no healthy checkpoint had been written yet"
    return (
        f"non-finite {where} at iteration {it} ({values}); stopped before the optimizer step, {keep}. "
        "Lower optim.base_lr, check the data for blank/duplicate tiles, or resume from the checkpoint."
    )


def _record(
    meta: MetaArch,
    terms: dict,
    total: torch.Tensor,
    sched: dict,
    norms: dict,
    timer: PhaseTimer,
    iters: int,
    elapsed: float,
    data_wait: float,
    global_batch: int,
    device: torch.device,
) -> dict:
    rec: dict[str, float] = {f"loss/{k}": v for k, v in meta.upstream_losses(terms).items()}
    rec["objective"] = float(total.detach())
    rec.update({f"term/{k}": float(v.detach()) for k, v in terms.items()})
    rec.update({f"sched/{k}": v for k, v in sched.items()})
    rec.update({f"grad_norm/{k}": v for k, v in norms.items()})
    extra = {k: m for k, m in meta.grad_norm_modules().items() if k not in norms}
    rec.update({f"grad_norm/{k}": v for k, v in clip_gradients(extra, 0.0).items()})
    rec.update({f"time/{k}": v / iters for k, v in timer.collect().items()})
    rec["images_per_s"] = global_batch * iters / elapsed
    rec["data_wait_fraction"] = data_wait / elapsed
    rec["peak_mem_mb"] = _peak_memory_mb(device)
    rec.update({f"diag/{k}": v for k, v in meta.diagnostics().items()})
    return rec
