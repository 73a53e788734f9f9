"""The trainable student (backbone + DINO/iBOT heads + per-expert distill heads) and the EMA teacher.

The student's whole forward runs inside :meth:`StudentModel.forward`, so that DDP / FSDP2 wrap ONE module and
see every trainable parameter used in one call (spec: one student forward over the masked globals and the
unmasked locals, then the heads).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from gpfm.models.vit import VIT_PRESETS, ViT, ViTConfig, build_vit
from gpfm.pretrain.config import PretrainConfig
from gpfm.pretrain.heads import DINOHead, DistillHead


def student_vit_config(cfg: PretrainConfig) -> ViTConfig:
    """The student's :class:`ViTConfig`: size preset + patch, LayerScale, FFN, drop path.

    ``dynamic_img_size`` is on so the 224-px position embedding is resampled for local crops (as DINOv2).
    """
    s = cfg.student
    if s.arch not in VIT_PRESETS:
        raise ValueError(f"student.arch={s.arch!r} is unknown; choose one of {', '.join(VIT_PRESETS)}")
    base = VIT_PRESETS[s.arch]
    sizes = {
        k: v for k, v in (("embed_dim", s.embed_dim), ("depth", s.depth), ("num_heads", s.num_heads)) if v
    }
    return replace(
        base,
        **sizes,
        patch_size=s.patch_size,
        img_size=cfg.data.global_crops_size,
        init_values=s.layerscale,
        ffn=s.ffn,
        drop_path_rate=s.drop_path_rate,
        drop_path_uniform=s.drop_path_uniform,
        dynamic_img_size=True,
    )


def distill_head_key(expert: str, target: str = "") -> str:
    """ModuleDict key of an expert's distill head (``.`` is not allowed in module names)."""
    key = expert.replace(".", "_")
    return f"{key}__{target}" if target else key


@dataclass
class StudentOutputs:
    """Everything the losses need from one student forward.

    Attributes:
        global_cls: (2B, D) final-norm CLS of the masked global crops (crop-major).
        global_patch: (2B, N, D) final-norm patch tokens of the masked global crops.
        local_cls: (nL·B, D) CLS of the local crops, or None without local crops.
        dino_logits: (2B + nL·B, K) DINO-head logits of every CLS (globals first).
        ibot_logits: (M, K) iBOT-head logits of the masked patch tokens (row-major over ``masks``).
        distill_cls: expert name → (2B, D_e) distill-head output of the CLS.
        distill_patch: expert name → (2B, N, D_e) distill-head output of the patch tokens.
        grid: (h, w) student patch grid of the global crops.
    """

    global_cls: torch.Tensor
    global_patch: torch.Tensor
    local_cls: torch.Tensor | None
    dino_logits: torch.Tensor
    ibot_logits: torch.Tensor
    distill_cls: dict[str, torch.Tensor]
    distill_patch: dict[str, torch.Tensor]
    grid: tuple[int, int]


@dataclass(frozen=True)
class ExpertHeadSpec:
    """What distill heads an expert needs.

    Attributes:
        name: expert name.
        cls_dim: CLS target width (0: no CLS term).
        patch_dim: patch target width (0: no patch term).
    """

    name: str
    cls_dim: int
    patch_dim: int


class StudentModel(nn.Module):
    """Student backbone with its heads.

    Args:
        cfg: run config.
        experts: per active expert, the target widths of the terms with non-zero weight.
    """

    def __init__(self, cfg: PretrainConfig, experts: list[ExpertHeadSpec]) -> None:
        super().__init__()
        self.vit_cfg = student_vit_config(cfg)
        self.backbone: ViT = build_vit(self.vit_cfg, mask_token=True)
        h = cfg.heads
        dim = self.vit_cfg.embed_dim
        self.dino_head = DINOHead(
            dim, h.dino_out_dim, h.dino_hidden_dim, h.dino_bottleneck_dim, h.dino_nlayers
        )
        self.ibot_head = (
            DINOHead(dim, h.ibot_out_dim, h.ibot_hidden_dim, h.ibot_bottleneck_dim, h.ibot_nlayers)
            if h.ibot_separate_head
            else None
        )
        self.extra_unmasked_pass = cfg.distill.expert_patch_tokens == "extra_unmasked_pass"
        self.distill_heads = nn.ModuleDict()
        self._head_of: dict[tuple[str, str], str] = {}
        for e in experts:
            # faithful: ONE head per expert maps CLS and patches; a second one only if the widths differ
            dims = {w for w in (e.cls_dim, e.patch_dim) if w}
            for target, width in (("cls", e.cls_dim), ("patch", e.patch_dim)):
                if not width:
                    continue
                key = distill_head_key(e.name, "" if len(dims) == 1 else target)
                if key not in self.distill_heads:
                    self.distill_heads[key] = DistillHead(
                        dim, width, h.distill_bottleneck_dim, h.distill_head
                    )
                self._head_of[(e.name, target)] = key

    def forward(
        self, global_crops: torch.Tensor, local_crops: torch.Tensor | None, masks: torch.Tensor
    ) -> StudentOutputs:
        """Student forward over masked globals + unmasked locals, then every head.

        Args:
            global_crops: (2B, 3, G, G) crop-major.
            local_crops: (nL·B, 3, L, L) or None.
            masks: (2B, N) bool iBOT masks of the globals.
        """
        p = self.vit_cfg.patch_size
        grid = (global_crops.shape[-2] // p, global_crops.shape[-1] // p)
        prefix = self.backbone.num_prefix_tokens
        g_tokens = self.backbone.forward_tokens(global_crops, masks=masks)
        g_cls, g_patch = g_tokens[:, 0], g_tokens[:, prefix:]
        cls_all = g_cls
        l_cls = None
        if local_crops is not None and local_crops.shape[0] > 0:
            l_cls = self.backbone.forward_tokens(local_crops)[:, 0]
            cls_all = torch.cat([g_cls, l_cls])
        dino_logits = self.dino_head(cls_all)
        masked_tokens = g_patch[masks]  # (M, D), row-major over masks
        ibot_logits = (self.ibot_head or self.dino_head)(masked_tokens)
        d_cls, d_patch = g_cls, g_patch
        if self.extra_unmasked_pass and self._head_of:
            clean = self.backbone.forward_tokens(global_crops)
            d_cls, d_patch = clean[:, 0], clean[:, prefix:]
        distill_cls: dict[str, torch.Tensor] = {}
        distill_patch: dict[str, torch.Tensor] = {}
        for (name, target), key in self._head_of.items():
            head = self.distill_heads[key]
            if target == "cls":
                distill_cls[name] = head(d_cls, which="cls")
            else:
                distill_patch[name] = head(d_patch, which="patch")
        return StudentOutputs(
            g_cls, g_patch, l_cls, dino_logits, ibot_logits, distill_cls, distill_patch, grid
        )

    def ema_modules(self) -> dict[str, nn.Module]:
        """Modules the EMA teacher tracks: backbone + DINO head (+ separate iBOT head), no distill heads."""
        mods: dict[str, nn.Module] = {"backbone": self.backbone, "dino_head": self.dino_head}
        if self.ibot_head is not None:
            mods["ibot_head"] = self.ibot_head
        return mods


class TeacherModel(nn.Module):
    """EMA teacher: same backbone (no drop path) and DINO/iBOT heads, initialised as a copy of the student."""

    def __init__(self, student: StudentModel) -> None:
        super().__init__()
        self.backbone = build_vit(replace(student.vit_cfg, drop_path_rate=0.0), mask_token=True)
        self.dino_head = _clone_head(student.dino_head)
        self.ibot_head = None if student.ibot_head is None else _clone_head(student.ibot_head)
        self.backbone.load_state_dict(student.backbone.state_dict())
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TeacherModel:
        """The teacher always stays in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, global_crops: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(DINO logits (2B, K) of the CLS, iBOT logits (M, K) of the tokens the student sees masked)."""
        tokens = self.backbone.forward_tokens(global_crops)
        cls, patch = tokens[:, 0], tokens[:, self.backbone.num_prefix_tokens :]
        ibot_head = self.ibot_head or self.dino_head
        return self.dino_head(cls), ibot_head(patch[masks])

    def ema_modules(self) -> dict[str, nn.Module]:
        """Same keys as :meth:`StudentModel.ema_modules`."""
        mods: dict[str, nn.Module] = {"backbone": self.backbone, "dino_head": self.dino_head}
        if self.ibot_head is not None:
            mods["ibot_head"] = self.ibot_head
        return mods


def _clone_head(head: DINOHead) -> DINOHead:
    # deepcopy keeps the weight-norm parametrisation and every value; the teacher never trains it
    return copy.deepcopy(head)


@torch.no_grad()
def ema_update(teacher: TeacherModel, student: StudentModel, momentum: float) -> None:
    """θ_T ← m·θ_T + (1 − m)·θ_S over backbone + DINO (+ iBOT) head parameters."""
    t_params, s_params = [], []
    s_mods = student.ema_modules()
    for name, t_mod in teacher.ema_modules().items():
        t_params += list(t_mod.parameters())
        s_params += list(s_mods[name].parameters())
    if len(t_params) != len(s_params):
        raise RuntimeError("teacher and student parameter lists differ; the EMA cannot be applied")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, [p.detach() for p in s_params], alpha=1.0 - momentum)
