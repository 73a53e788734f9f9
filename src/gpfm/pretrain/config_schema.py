"""The typed schema of a UNKD pretraining run: one dataclass per config section.

Defaults = the GPFM ViT-L/14 release (every switch at its [F] value). Loading,
presets, overrides and validation live in :mod:`gpfm.pretrain.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gpfm.errors import GpfmError


class ConfigError(GpfmError, ValueError):
    """A configuration value or key is invalid; the message names it and the fix."""


@dataclass
class StudentConfig:
    """Student backbone.

    Attributes:
        arch: size preset of :data:`gpfm.models.vit.VIT_PRESETS` (``vit_tiny|small|base|large``).
        patch_size: patch side in px (GPFM: 14).
        drop_path_rate: stochastic depth of the student (GPFM: 0.4). The EMA teacher never drops paths.
        drop_path_uniform: same rate in every block (GPFM [F]) instead of linearly increasing.
        layerscale: LayerScale init (GPFM 1e-5; None disables LayerScale).
        ffn: ``mlp`` (GPFM) or ``swiglu``.
        init: ``scratch`` [F as written] or a path to a GPFM/timm checkpoint loaded strictly [I].
        embed_dim: width override of the preset (None: the preset's).
        depth: block-count override (None: the preset's).
        num_heads: head-count override (None: the preset's).
    """

    arch: str = "vit_large"
    patch_size: int = 14
    drop_path_rate: float = 0.4
    drop_path_uniform: bool = True
    layerscale: float | None = 1e-5
    ffn: str = "mlp"
    init: str = "scratch"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None


@dataclass
class HeadsConfig:
    """DINO/iBOT projection heads and expert distillation heads (switch #6).

    Attributes:
        dino_out_dim: prototypes K of the DINO head (GPFM 65,536).
        dino_hidden_dim: MLP width.
        dino_bottleneck_dim: bottleneck before the weight-normalised last layer.
        dino_nlayers: MLP layers.
        ibot_separate_head: a separate iBOT head (False: one head shared by DINO and iBOT, GPFM [F]).
        ibot_out_dim: prototypes of the separate iBOT head (ignored when shared).
        ibot_hidden_dim: width of the separate iBOT head.
        ibot_bottleneck_dim: bottleneck of the separate iBOT head.
        ibot_nlayers: MLP layers of the separate iBOT head.
        distill_head: ``shared_dinohead_1layer`` [F] or ``separate_mlp`` [I].
        distill_bottleneck_dim: bottleneck of the faithful distill head (256).
    """

    dino_out_dim: int = 65536
    dino_hidden_dim: int = 2048
    dino_bottleneck_dim: int = 256
    dino_nlayers: int = 3
    ibot_separate_head: bool = False
    ibot_out_dim: int = 65536
    ibot_hidden_dim: int = 2048
    ibot_bottleneck_dim: int = 256
    ibot_nlayers: int = 3
    distill_head: str = "shared_dinohead_1layer"
    distill_bottleneck_dim: int = 256


@dataclass
class SSLConfig:
    """Self-distillation losses.

    Attributes:
        dino_weight: weight of L_DINO (1.0).
        ibot_weight: weight of L_iBOT (1.0).
        koleo_weight: weight of the KoLeo term (0.1).
        koleo_fp32: upcast the CLS to fp32 before KoLeo [I]; False keeps the autocast dtype.
        student_temp: τ_S.
        teacher_temp: τ_T after warm-up.
        warmup_teacher_temp: τ_T at iteration 0.
        warmup_teacher_temp_iters: linear τ_T warm-up length (30 epochs × 1,250 = 37,500).
        centering: ``softmax_center`` [F] or ``sinkhorn_knopp`` [I].
        center_momentum: centre EMA momentum (0.9).
    """

    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    koleo_fp32: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_iters: int = 37500
    centering: str = "softmax_center"
    center_momentum: float = 0.9


@dataclass
class ExpertConfig:
    """One frozen expert teacher. A weight of 0 on both terms means it is never loaded.

    Attributes:
        name: a :func:`gpfm.models.list_encoders` name (``uni``, ``phikon``, ``conch``, ...).
        weights: None (search the usual places), ``random`` (timing/tests only) or a path.
        cls_weight: weight of L_cls (1 − cos).
        patch_weight: weight of L_patch (0.9·(1 − cos) + 0.1·SmoothL1).
    """

    name: str = "uni"
    weights: str | None = None
    cls_weight: float = 1.0
    patch_weight: float = 0.0

    @property
    def enabled(self) -> bool:
        """True when at least one of its loss terms has a non-zero weight."""
        return self.cls_weight != 0.0 or self.patch_weight != 0.0


def _release_experts() -> list[ExpertConfig]:
    # ViT-L release weights: UNI 1.0/0.25, Phikon 0.5/0.125, CONCH 1.0/(patch never used).
    return [
        ExpertConfig("uni", None, 1.0, 0.25),
        ExpertConfig("phikon", None, 0.5, 0.125),
        ExpertConfig("conch", None, 1.0, 0.0),
    ]


@dataclass
class DistillConfig:
    """Expert distillation (switch #2-#8, #14).

    Attributes:
        experts: the configured experts, in order (a list, never one flag per expert).
        expert_norm: ``shared_imagenet`` [F] (experts get the student's crops) or ``per_expert`` [I].
        conch_target: ``proj_contrast`` [F] or ``pooled_no_proj`` [I].
        conch_patch: ``none`` [F] or ``trunk_tokens`` [I] (never the caption queries).
        expert_patch_tokens: ``all`` [F] (masked student tokens regressed too), ``unmasked_only`` or
            ``extra_unmasked_pass`` (an extra unmasked student forward of the globals) [I].
        align: ``teacher_bicubic_up`` [F] or ``student_down`` [I].
        align_dtype: ``fp16`` [F] or ``fp32`` [I] for the grid resampling.
        teacher_feature_norm: ``none`` [F] (raw expert features) or ``ema_zscore`` [I] (running per-channel
            z-scores of every expert target, :mod:`gpfm.pretrain.target_norm`).
        cls_loss: expert CLS loss: ``cosine`` [F] (1 − cos, the ViT-L release) or ``kl`` (softmax KL over feature
            dimensions, T = 1, the GPFM code's generic default).
        expert_view: ``augmented`` [F] (experts see the photometrically distorted crops) or ``clean`` [I,
            experimental, switch #14] (the same geometric crops without photometric changes).
        expert_targets: ``live`` [F] (every step runs every expert on the batch) or ``cached`` [I, needs
            ``expert_view=clean``]: each expert sees one fixed clean view of each tile (the whole tile at
            ``expert_cache_size``), computed once and stored in HDF5 (:mod:`gpfm.pretrain.expert_cache`); the CLS
            target is the tile's, the patch target is the tile's feature map resampled to each global crop's box,
            flips and rotation. Experts are then not kept in memory while training.
        expert_cache: folder of the target files (None: ``<train.output_dir>/expert_targets``); share it across
            runs on the same tiles (a file is keyed by the tile list and the expert's weights).
        expert_cache_size: side of the fixed view in px (0: each expert's own input size).
        expert_cache_dtype: storage of the patch maps: ``fp16`` (half the disk; |Δ| ≤ 1e-3 relative) or ``fp32``.
        cos_weight: share of (1 − cos) in the patch loss (0.9).
        smooth_l1_weight: share of SmoothL1(β=1) in the patch loss (0.1).
    """

    experts: list[ExpertConfig] = field(default_factory=_release_experts)
    expert_norm: str = "shared_imagenet"
    conch_target: str = "proj_contrast"
    conch_patch: str = "none"
    expert_patch_tokens: str = "all"
    align: str = "teacher_bicubic_up"
    align_dtype: str = "fp16"
    teacher_feature_norm: str = "none"
    cls_loss: str = "cosine"
    expert_view: str = "augmented"
    expert_targets: str = "live"
    expert_cache: str | None = None
    expert_cache_size: int = 0
    expert_cache_dtype: str = "fp16"
    cos_weight: float = 0.9
    smooth_l1_weight: float = 0.1

    @property
    def active_experts(self) -> list[ExpertConfig]:
        """Experts with a non-zero weight (the only ones that are built)."""
        return [e for e in self.experts if e.enabled]


@dataclass
class DataConfig:
    """Tile source, multi-crop augmentation and iBOT masking.

    Attributes:
        source: ``folder`` (image files under ``root``) or ``slides`` (slides + coordinate HDF5 files).
        root: folder of tiles, or a text file listing one tile path per line.
        slides: ``[[slide_path, coords_h5], ...]`` for ``source: slides``.
        mpp: target µm/px for slide tiles (None: level 0 as upstream).
        batch_size_per_gpu: images per process per step (GPFM 96).
        num_workers: DataLoader worker processes per process (0: load in the main process).
        global_crops_size: global crop side (224).
        local_crops_size: local crop side (98).
        local_crops_number: local crops per image (8).
        global_crops_scale: RandomResizedCrop area range of the globals.
        local_crops_scale: area range of the locals.
        blur_semantics: ``dinov2_inverted`` [F] or ``intended`` [I] (switch #1).
        aug_preset: ``dinov2`` [F] or ``pathology`` [I] (switch #12).
        mask_probability: share of global crops that are iBOT-masked (0.5).
        mask_ratio_min_max: mask-ratio range spread over the masked crops.
    """

    source: str = "folder"
    root: str | None = None
    slides: list[list[str]] = field(default_factory=list)
    mpp: float | None = None
    batch_size_per_gpu: int = 96
    num_workers: int = 10
    global_crops_size: int = 224
    local_crops_size: int = 98
    local_crops_number: int = 8
    global_crops_scale: tuple[float, float] = (0.32, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.32)
    blur_semantics: str = "dinov2_inverted"
    aug_preset: str = "dinov2"
    mask_probability: float = 0.5
    mask_ratio_min_max: tuple[float, float] = (0.1, 0.5)


@dataclass
class OptimConfig:
    """AdamW, schedules and clipping. Schedules always span ``epochs × iters_per_epoch``.

    Attributes:
        base_lr: LR before batch scaling (4e-4).
        lr_scaling: ``sqrt_1024`` (lr = base·√(global batch/1024)) or ``none``.
        min_lr: cosine floor (1e-6).
        epochs: scheduled "epochs" (400).
        iters_per_epoch: iterations per "epoch" (1,250; not a data pass).
        warmup_epochs: linear LR warm-up (40).
        weight_decay: WD at iteration 0 (0.04).
        weight_decay_end: WD at the end (0.4).
        betas: AdamW betas.
        eps: AdamW epsilon.
        layerwise_decay: LR decay per block from the top (0.9; 1.0 disables).
        patch_embed_lr_mult: extra factor for the patch embedding (0.2).
        freeze_last_layer_epochs: epochs with LR 0 on ``last_layer`` parameters (1).
        clip_grad: global-norm clip per module (3.0; 0 disables).
        clip_scope: ``backbone_and_dino_head`` [F] or ``all_trainable`` [I] (switch #9).
        momentum_teacher: EMA momentum at iteration 0 (0.992).
        final_momentum_teacher: EMA momentum at the end (1.0).
    """

    base_lr: float = 4e-4
    lr_scaling: str = "sqrt_1024"
    min_lr: float = 1e-6
    epochs: int = 400
    iters_per_epoch: int = 1250
    warmup_epochs: int = 40
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    freeze_last_layer_epochs: int = 1
    clip_grad: float = 3.0
    clip_scope: str = "backbone_and_dino_head"
    momentum_teacher: float = 0.992
    final_momentum_teacher: float = 1.0

    @property
    def total_iters(self) -> int:
        """Length of every schedule (500,000 for GPFM)."""
        return self.epochs * self.iters_per_epoch


@dataclass
class TrainConfig:
    """Run control, checkpoints, precision and parallelism.

    Attributes:
        output_dir: run folder (checkpoints, metrics, exports).
        seed: base seed of the data stream, masks and torch RNG.
        device: ``auto``, ``cpu``, ``cuda`` ...
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``.
        parallel: ``ddp`` or ``fsdp2`` (``fully_shard``; bf16 params on CUDA) when launched under torchrun.
        stop_at_iteration: stop early while schedules keep the full horizon (faithful release: 87,500).
        checkpoint_every: iterations between full resumable checkpoints (3,750).
        keep_last: full checkpoints kept (3).
        teacher_checkpoint_every: iterations between exported EMA-teacher encoders (12,500; 0 disables).
        log_every: iterations between metric records (10).
        tf32: allow TF32 matmuls on CUDA.
        probe_root: a labelled ROI folder (``labels.csv``: file,label[,sha256]) for the in-training kNN/linear
            probe of the EMA teacher; None disables it.
        probe_every: iterations between probes (12,500, with the teacher exports).
        probe_max_images: at most this many probe images (a fixed seeded subset).
    """

    output_dir: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    parallel: str = "ddp"
    stop_at_iteration: int | None = 87500
    checkpoint_every: int = 3750
    keep_last: int = 3
    teacher_checkpoint_every: int = 12500
    log_every: int = 10
    tf32: bool = True
    probe_root: str | None = None
    probe_every: int = 12500
    probe_max_images: int = 2000


@dataclass
class PretrainConfig:
    """The whole run; the defaults are the faithful GPFM ViT-L/14 release."""

    student: StudentConfig = field(default_factory=StudentConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML/JSON-serialisable dict of every resolved value."""
        return _plain(dataclasses.asdict(self))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
