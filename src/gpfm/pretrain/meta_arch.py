"""UNKD meta-architecture: student + EMA teacher + frozen experts + losses, one step split into small methods.

One step:  crops → :meth:`teacher_targets` → :meth:`expert_targets` → :meth:`student_outputs` →
:meth:`loss_terms` → :meth:`objective` (then the loop runs backward, the optimizer and
:meth:`update_teacher`).

The objective, with every weight from the config and the experts from a configured LIST:

    L = w_dino·L_DINO + w_ibot·L_iBOT + w_koleo·Σ_{g=1,2} KoLeo(CLS_g)
        + Σ_e [ w_cls^e · L_cls^e + w_patch^e · L_patch^e ]

GPFM: w_dino = w_ibot = 1, w_koleo = 0.1, (UNI 1/0.25, Phikon 0.5/0.125, CONCH 1/0). An expert whose two
weights are 0 is never built. Logged losses keep the upstream names and values; ``objective`` is the
optimised L.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from gpfm.pretrain.config import PretrainConfig
from gpfm.pretrain.dist import reshard
from gpfm.pretrain.expert_cache import CachedExpert
from gpfm.pretrain.experts import ExpertTargets
from gpfm.pretrain.heads import head_gains
from gpfm.pretrain.losses import DINOLoss, ExpertClsKLLoss, ExpertClsLoss, ExpertPatchLoss, IBOTPatchLoss, KoLeoLoss
from gpfm.pretrain.student import ExpertHeadSpec, StudentModel, StudentOutputs, TeacherModel, ema_update
from gpfm.pretrain.target_norm import build_target_norms
from gpfm.runtime import autocast


@dataclass
class TeacherTargets:
    """EMA-teacher targets of one step.

    Attributes:
        dino_probs: one (B, K) probability tensor per global view.
        ibot_probs: (M, K) probabilities of the tokens masked in the student's view.
        dino_logits: (2B, K) raw teacher logits (for diagnostics).
    """

    dino_probs: list[torch.Tensor]
    ibot_probs: torch.Tensor
    dino_logits: torch.Tensor


def build_experts(cfg: PretrainConfig, device: torch.device) -> dict:
    """Build every ACTIVE expert of ``cfg.distill.experts`` (weight 0 → not built) in config order."""
    d = cfg.distill
    if not d.active_experts:
        return {}
    from gpfm.pretrain.experts import build_expert

    params = inspect.signature(build_expert).parameters
    extra = {}
    if d.conch_patch != "none":
        if "conch_patch" not in params:
            raise ValueError(
                f"distill.conch_patch={d.conch_patch!r} is not supported by gpfm.pretrain.experts "
                "in this version; use conch_patch=none"
            )
        extra["conch_patch"] = d.conch_patch
    experts = {}
    for e in d.active_experts:
        experts[e.name] = build_expert(
            e.name,
            weights=e.weights,
            device=device,
            input_norm=d.expert_norm,
            conch_target=d.conch_target,
            **extra,
        )
    return experts


class MetaArch(nn.Module):
    """Student, EMA teacher, experts and losses of a UNKD run.

    Args:
        cfg: resolved config.
        device: where everything runs.
        experts: pre-built experts by name (None: built from ``cfg``); only active ones are used.
        precision: ``fp32`` or ``bf16`` autocast for the student and teacher forwards.
    """

    def __init__(
        self, cfg: PretrainConfig, device: torch.device, experts: dict | None = None, precision: str = "fp32"
    ) -> None:
        super().__init__()
        self.cfg, self.device, self.precision = cfg, device, precision
        self.expert_cfgs = {e.name: e for e in cfg.distill.active_experts}
        experts = build_experts(cfg, device) if experts is None else experts
        # experts are frozen and never saved: keep them out of the module tree (and out of state_dict)
        self._experts = {name: experts[name] for name in self.expert_cfgs}
        specs = []
        for name, ecfg in self.expert_cfgs.items():
            ex = self._experts[name]
            if ecfg.patch_weight and not ex.has_patch_target:
                raise ValueError(f"expert {name!r} has no patch target; set its patch_weight to 0")
            specs.append(
                ExpertHeadSpec(
                    name, ex.cls_dim if ecfg.cls_weight else 0, ex.patch_dim if ecfg.patch_weight else 0
                )
            )
        self.student = StudentModel(cfg, specs).to(device)
        self.teacher = TeacherModel(self.student).to(device)
        h, s = cfg.heads, cfg.ssl
        self.dino_loss = DINOLoss(h.dino_out_dim, s.student_temp, s.center_momentum).to(device)
        ibot_dim = h.ibot_out_dim if h.ibot_separate_head else h.dino_out_dim
        self.ibot_loss = IBOTPatchLoss(ibot_dim, s.student_temp, s.center_momentum).to(device)
        self.koleo_loss = KoLeoLoss(upcast_fp32=cfg.ssl.koleo_fp32)
        self.expert_cls_loss = ExpertClsKLLoss() if cfg.distill.cls_loss == "kl" else ExpertClsLoss()
        self.target_norms = build_target_norms(
            cfg.distill.teacher_feature_norm, {s.name: (s.cls_dim, s.patch_dim) for s in specs}).to(device)
        tokens = "unmasked_only" if cfg.distill.expert_patch_tokens == "unmasked_only" else "all"
        self.expert_patch_loss = ExpertPatchLoss(
            cfg.distill.cos_weight,
            cfg.distill.smooth_l1_weight,
            cfg.distill.align,
            cfg.distill.align_dtype,
            tokens,
        )
        # the module whose forward runs the student (DDP/FSDP wrapper when distributed); kept out of the
        # module tree so the state dict has each parameter once
        self.__dict__["student_forward_module"] = self.student

    def set_student_wrapper(self, wrapper: nn.Module) -> None:
        """Route :meth:`student_outputs` through ``wrapper`` (DDP / FSDP2) around :attr:`student`."""
        self.__dict__["student_forward_module"] = wrapper

    @property
    def experts(self) -> dict:
        """The active experts by name."""
        return self._experts

    def clip_modules(self) -> dict[str, nn.Module]:
        """Modules clipped separately: backbone + DINO (+ iBOT) head [F]; plus each distill head [I]."""
        mods = dict(self.student.ema_modules())
        if self.cfg.optim.clip_scope == "all_trainable":
            mods.update({f"distill_{k}": m for k, m in self.student.distill_heads.items()})
        return mods

    def grad_norm_modules(self) -> dict[str, nn.Module]:
        """Every trainable module whose pre-clip gradient norm is logged."""
        mods = dict(self.student.ema_modules())
        mods.update({f"distill_{k}": m for k, m in self.student.distill_heads.items()})
        return mods

    # ---- one step, in order -------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_targets(self, batch: dict, teacher_temp: float) -> TeacherTargets:
        """DINO targets of both globals and iBOT targets of the masked tokens; then the centers move."""
        globals_, masks = batch["global_crops"], batch["masks"]
        with autocast(self.device, self.precision):
            dino_logits, ibot_logits = self.teacher(globals_, masks)
        reshard(self.teacher)  # FSDP2 keeps a root's parameters gathered after forward; the EMA needs shards
        n_views = 2
        if self.cfg.ssl.centering == "sinkhorn_knopp":
            dino_probs = self.dino_loss.sinkhorn_knopp_teacher(dino_logits, teacher_temp)
            ibot_probs = self.ibot_loss.sinkhorn_knopp_teacher(ibot_logits, teacher_temp)
        else:
            dino_probs = self.dino_loss.softmax_center_teacher(dino_logits, teacher_temp)
            ibot_probs = self.ibot_loss.softmax_center_teacher(ibot_logits, teacher_temp)
            self.dino_loss.update_center(dino_logits)
            # a batch without masks has no iBOT rows; skip (consistently on all ranks) rather than divide by 0
            if self.cfg.data.mask_probability > 0:
                self.ibot_loss.update_center(ibot_logits)
        return TeacherTargets(list(dino_probs.chunk(n_views)), ibot_probs, dino_logits)

    @torch.no_grad()
    def expert_targets(self, batch: dict) -> dict:
        """Each expert's CLS/patch targets on the same augmented global crops the student sees.

        A :class:`~gpfm.pretrain.expert_cache.CachedExpert` instead looks its targets up by sample index and crop
        geometry (``distill.expert_targets=cached``).

        Experts run under ``inference_mode``; their outputs are cloned into ordinary tensors because the
        losses' autograd graph may save them (SmoothL1).
        """
        crops = batch["global_crops"]
        live = any(not isinstance(e, CachedExpert) for e in self._experts.values())
        if live and self.cfg.distill.expert_view == "clean":
            if batch.get("global_crops_clean") is None:
                raise ValueError("distill.expert_view=clean needs batches with global_crops_clean")
            crops = batch["global_crops_clean"]
        out = {}
        for name, expert in self._experts.items():
            if isinstance(expert, CachedExpert):  # distill.expert_targets=cached: looked up, no forward
                out[name] = expert.targets(batch["indices"], batch["global_crops_geometry"])
                continue
            t = expert(crops)
            out[name] = t._replace(cls=t.cls.clone(), patch=None if t.patch is None else t.patch.clone())
        return out

    def student_outputs(self, batch: dict) -> StudentOutputs:
        """The student forward (through the DDP/FSDP wrapper when distributed)."""
        local = batch.get("local_crops")
        with autocast(self.device, self.precision):
            return self.student_forward_module(batch["global_crops"], local, batch["masks"])

    def loss_terms(self, out: StudentOutputs, teacher: TeacherTargets, experts: dict, batch: dict) -> dict:
        """Un-weighted loss terms by name (fp32 scalars), plus expert cosine/SmoothL1 parts."""
        masks = batch["masks"]
        b = out.global_cls.shape[0] // 2
        student_views = list(out.dino_logits.split(b))
        pairs = self.dino_loss.pair_losses(student_views, teacher.dino_probs)  # (n_views, 2)
        n_terms = pairs.numel() - 2  # minus the 2 same-view pairs
        terms: dict[str, torch.Tensor] = {
            "dino_global": (pairs[0, 1] + pairs[1, 0]) / n_terms,
            "dino_local": pairs[2:].sum() / n_terms,
            "ibot": self.ibot_loss.forward_masked(out.ibot_logits, teacher.ibot_probs, masks),
        }
        terms["koleo"] = sum(self.koleo_loss(chunk) for chunk in out.global_cls.split(b))  # dtype: ssl.koleo_fp32
        for name, ecfg in self.expert_cfgs.items():
            target = self._normalised(name, experts[name])
            if ecfg.cls_weight:
                terms[f"distill_{name}_cls"] = self.expert_cls_loss(out.distill_cls[name], target.cls)
            if ecfg.patch_weight:
                part_masks = masks if self.cfg.distill.expert_patch_tokens == "unmasked_only" else None
                parts = self.expert_patch_loss.parts(
                    out.distill_patch[name], out.grid, target.patch, target.grid, part_masks
                )
                terms[f"distill_{name}_patch"] = parts.loss
                terms[f"distill_{name}_patch_cos"] = parts.mean_cos.detach()
                terms[f"distill_{name}_patch_smooth_l1"] = parts.smooth_l1.detach()
        return terms

    def _normalised(self, name: str, target: ExpertTargets) -> ExpertTargets:
        """The expert's targets after ``distill.teacher_feature_norm`` (unchanged for ``none``)."""
        norms = self.target_norms
        cls = norms[f"{name}_cls"](target.cls) if f"{name}_cls" in norms else target.cls
        patch = target.patch
        if patch is not None and f"{name}_patch" in norms:
            patch = norms[f"{name}_patch"](patch)
        return target._replace(cls=cls, patch=patch)

    def weights(self) -> dict[str, float]:
        """Weight of every term entering the objective."""
        s = self.cfg.ssl
        w = {
            "dino_global": s.dino_weight,
            "dino_local": s.dino_weight,
            "ibot": s.ibot_weight,
            "koleo": s.koleo_weight,
        }
        for name, e in self.expert_cfgs.items():
            if e.cls_weight:
                w[f"distill_{name}_cls"] = e.cls_weight
            if e.patch_weight:
                w[f"distill_{name}_patch"] = e.patch_weight
        return w

    def objective(self, terms: dict) -> torch.Tensor:
        """The optimised loss L = Σ_term weight · term (module docstring)."""
        return sum(w * terms[k] for k, w in self.weights().items() if w)

    def upstream_losses(self, terms: dict) -> dict[str, float]:
        """Upstream-comparable logged values.

        iBOT and KoLeo at half their objective value, expert terms weighted, ``total_loss`` their sum (not the
        optimised loss).
        """
        w = self.weights()
        v = {k: float(t.detach()) for k, t in terms.items()}
        out = {
            "dino_local_crops_loss": w["dino_local"] * v["dino_local"],
            "dino_global_crops_loss": w["dino_global"] * v["dino_global"],
            "ibot_loss": w["ibot"] * v["ibot"] / 2,
            "koleo_loss": w["koleo"] * v["koleo"] / 2,
        }
        for key, weight in w.items():
            if key.startswith("distill_"):
                out[f"{key}_loss"] = weight * v[key]
        out["total_loss"] = sum(out.values())
        return out

    def compute(self, batch: dict, teacher_temp: float, timer=None) -> tuple[torch.Tensor, dict]:
        """Run one step's forward passes and losses; returns (objective, un-weighted terms)."""
        phase = timer.phase if timer is not None else _no_phase
        with phase("teacher"):
            teacher = self.teacher_targets(batch, teacher_temp)
        with phase("experts"):
            experts = self.expert_targets(batch)
        with phase("student_forward"):
            out = self.student_outputs(batch)
            terms = self.loss_terms(out, teacher, experts, batch)
            total = self.objective(terms)
        self._last = (out, teacher, experts, batch)
        return total, terms

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA of backbone + DINO head; distill heads have no EMA."""
        ema_update(self.teacher, self.student, momentum)

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """Health and scale diagnostics of the last :meth:`compute`; call only when logging."""
        out, teacher, experts, batch = self._last
        probs = torch.cat(teacher.dino_probs)
        d: dict[str, float] = {
            "dino_teacher_entropy": float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()),
            "dino_teacher_max_prob": float(probs.max(-1).values.mean()),
            "dino_center_norm": float(self.dino_loss.center.norm()),
            "ibot_center_norm": float(self.ibot_loss.center.norm()),
            "masked_ratio": float(batch["masks"].float().mean()),
        }
        if teacher.ibot_probs.shape[0]:
            ip = teacher.ibot_probs
            d["ibot_teacher_entropy"] = float(-(ip * ip.clamp_min(1e-12).log()).sum(-1).mean())
            d["ibot_teacher_max_prob"] = float(ip.max(-1).values.mean())
        b = out.global_cls.shape[0] // 2
        nn_d = torch.cat([self.koleo_loss.nearest_neighbour_distances(c) for c in out.global_cls.split(b)])
        d["koleo_min_nn_distance"] = float(nn_d.min())
        d["koleo_near_duplicates"] = float((nn_d < 1e-3).sum())
        for name, target in experts.items():
            d[f"expert_{name}_cls_norm"] = float(target.cls.float().norm(dim=-1).mean())
            if target.patch is not None:
                d[f"expert_{name}_patch_norm"] = float(target.patch.float().norm(dim=-1).mean())
            if name in out.distill_cls:
                d[f"head_{name}_cls_out_norm"] = float(out.distill_cls[name].float().norm(dim=-1).mean())
        for key, head in self.student.distill_heads.items():
            gains = head_gains(head)
            if gains is not None:
                d[f"head_{key}_gain_mean"] = float(gains.mean())
                d[f"head_{key}_gain_max"] = float(gains.max())
        return d


class _NoPhase:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _no_phase(name: str) -> _NoPhase:
    return _NoPhase()
