"""Frozen expert encoders that provide the distillation targets of UNKD.

Any encoder of the :mod:`gpfm.models` registry can be an expert (UNI, Phikon and CONCH in the release; any
other name, or an already-built :class:`~gpfm.models.Encoder`, e.g. a tiny random ViT for tests). The
registry entry already describes everything distillation needs — loader, input recipe, token extractor
(CLS and spatial tokens), output dimensions — so an expert is one name in the config.

Targets, computed on the student's augmented global crops (never on local crops):
    CLS target: the encoder's final-norm CLS (``TokenOutput.cls``). For an encoder whose pooling is
    ``contrastive`` (CONCH) ``TokenOutput.cls`` is the L2-normalised projected contrastive embedding
    (``conch_target="proj_contrast"`` [F]); ``"pooled_no_proj"`` [I, switch #3] uses the 512-d pre-projection
    pooled feature instead.
    Patch target: the encoder's spatial tokens after the final norm (``TokenOutput.patch``, row-major on
    ``grid``) when it has them. For a contrastive (CONCH) expert none by default (``conch_patch="none"`` [F,
    switch #4]); ``"trunk_tokens"`` [I] gives the ViT trunk tokens. CONCH's caption-pooler queries are not spatial
    and are never exposed by the encoder, so they can never become a patch target.

Input (switch #2): ``input_norm="shared_imagenet"`` [F] feeds the crops exactly as the student sees them.
``"per_expert"`` [I] renormalises on the device, x_e = (x·σ_in + μ_in − μ_e)/σ_e, with (μ_in, σ_in) the
student's normalisation and (μ_e, σ_e) the expert's. Size: crops are resized (bicubic, antialiased) to the
expert's input size **only** when they differ and the expert cannot take them — a ViT whose position
embedding is fixed to another size (UNI and Phikon at 224 take 224 crops; CONCH interpolates its 448 px
position embedding, so it stays at 224 as upstream; CNNs take any size).

Frozen: parameters have ``requires_grad=False``, the model stays in eval mode, and the forward runs under
``torch.inference_mode`` with autocast (bf16 on CUDA by default). :class:`Expert` is deliberately not an
``nn.Module``: it never enters a student's ``state_dict``, an optimizer, DDP/FSDP wrapping, or ``.train()``.
"""

from __future__ import annotations

import os
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

from gpfm.models import Encoder, create_encoder
from gpfm.models.spec import IMAGENET_MEAN, IMAGENET_STD

InputNorm = Literal["shared_imagenet", "per_expert"]
ConchTarget = Literal["proj_contrast", "pooled_no_proj"]
ConchPatch = Literal["none", "trunk_tokens"]
_PRECISION_OF = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class ExpertTargets(NamedTuple):
    """Distillation targets of one expert for a batch of crops (fp32, no autograd history).

    Attributes:
        cls: (B, D_cls) CLS target.
        patch: (B, N, D_patch) spatial tokens row-major on ``grid``, or None.
        grid: (h, w) of ``patch``, or None.
    """

    cls: torch.Tensor
    patch: torch.Tensor | None
    grid: tuple[int, int] | None


def _find_vit(model: torch.nn.Module) -> Any:
    from timm.models.vision_transformer import VisionTransformer

    return next((m for m in model.modules() if isinstance(m, VisionTransformer)), None)


class Expert:
    """A frozen encoder that maps student-normalised crops to distillation targets.

    Build it with :func:`build_expert`. Attributes: ``name``, ``cls_dim``, ``patch_dim`` (None without a patch
    target), ``has_patch_target``, ``encoder``, ``input_norm``, ``conch_target``, ``conch_patch``.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        input_norm: InputNorm = "shared_imagenet",
        student_mean: tuple[float, float, float] = IMAGENET_MEAN,
        student_std: tuple[float, float, float] = IMAGENET_STD,
        conch_target: ConchTarget = "proj_contrast",
        conch_patch: ConchPatch = "none",
    ) -> None:
        if conch_patch not in ("none", "trunk_tokens"):
            raise ValueError(f"unknown conch_patch {conch_patch!r}; use 'none' or 'trunk_tokens'")
        if input_norm not in ("shared_imagenet", "per_expert"):
            raise ValueError(
                f"unknown expert input_norm {input_norm!r}; use 'shared_imagenet' or 'per_expert'"
            )
        if conch_target not in ("proj_contrast", "pooled_no_proj"):
            raise ValueError(
                f"unknown conch_target {conch_target!r}; use 'proj_contrast' or 'pooled_no_proj'"
            )
        self.encoder = encoder
        self.spec = encoder.spec
        self.name = encoder.spec.name
        self.input_norm, self.conch_target, self.conch_patch = input_norm, conch_target, conch_patch
        encoder.model.eval().requires_grad_(False)
        contrastive = self.spec.pooling == "contrastive"
        self._use_pooled = contrastive and conch_target == "pooled_no_proj"
        cls_from_pooled = self._use_pooled or self.spec.pooling in ("cls", "pooled", "contrastive")
        self.cls_dim: int = self.spec.embed_dim if cls_from_pooled else int(self.spec.token_dim)
        self.has_patch_target = self.spec.token_dim is not None and not (
            contrastive and conch_patch == "none"
        )
        self.patch_dim: int | None = self.spec.token_dim if self.has_patch_target else None
        dev = encoder.device
        pre = self.spec.preprocess
        # x_e = x·a + b with a = σ_in/σ_e, b = (μ_in − μ_e)/σ_e (per channel)
        s_in, m_in = torch.tensor(student_std), torch.tensor(student_mean)
        m_e, s_e = torch.tensor(pre.mean), torch.tensor(pre.std)
        self._scale = (s_in / s_e).view(1, 3, 1, 1).to(dev)
        self._shift = ((m_in - m_e) / s_e).view(1, 3, 1, 1).to(dev)
        vit = _find_vit(encoder.model)
        self._fixed_size = None
        if vit is not None and not getattr(vit, "dynamic_img_size", False):
            self._fixed_size = tuple(vit.patch_embed.img_size)

    @property
    def device(self) -> torch.device:
        """Where the expert runs."""
        return self.encoder.device

    @property
    def precision(self) -> str:
        """Autocast precision of the forward (``fp32``, ``bf16``, ``fp16``)."""
        return self.encoder.precision

    def input_size_for(self, crop_size: tuple[int, int]) -> tuple[int, int]:
        """The size the crops are fed at: unchanged unless a fixed-size ViT needs its own size."""
        if self._fixed_size is not None and tuple(crop_size) != self._fixed_size:
            return self._fixed_size
        return tuple(crop_size)

    def prepare(self, crops: torch.Tensor) -> torch.Tensor:
        """Student-normalised crops → this expert's input (device, renormalisation, resize if needed)."""
        x = crops.to(self.device, non_blocking=True)
        if self.input_norm == "per_expert":
            x = x.float() * self._scale + self._shift
        size = self.input_size_for(tuple(x.shape[-2:]))
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
        return x

    def __call__(self, crops: torch.Tensor) -> ExpertTargets:
        """Targets for (B, 3, H, W) crops normalised as the student sees them."""
        from gpfm.runtime import autocast

        with torch.inference_mode():
            x = self.prepare(crops)
            with autocast(self.device, self.precision):
                out = self.spec.forward_tokens(self.encoder.model, x)
        # clone outside inference mode: inference tensors cannot be saved for the student's backward
        cls = (out.pooled if self._use_pooled else out.cls).float().clone()
        patch = out.patch.float().clone() if self.has_patch_target and out.patch is not None else None
        return ExpertTargets(cls=cls, patch=patch, grid=None if patch is None else tuple(out.grid))

    def metadata(self) -> dict[str, Any]:
        """Identity for the run manifest (weights hash, precision, options); never checkpointed."""
        return {
            **self.encoder.metadata(),
            "input_norm": self.input_norm,
            "conch_target": self.conch_target,
            "conch_patch": self.conch_patch,
            "cls_dim": self.cls_dim,
            "patch_dim": self.patch_dim,
        }

    def __repr__(self) -> str:
        return (
            f"Expert({self.name}, cls_dim={self.cls_dim}, patch_dim={self.patch_dim}, "
            f"input_norm={self.input_norm}, precision={self.precision}, device={self.device})"
        )


def build_expert(
    name: str | Encoder,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    input_norm: InputNorm = "shared_imagenet",
    student_mean: tuple[float, float, float] = IMAGENET_MEAN,
    student_std: tuple[float, float, float] = IMAGENET_STD,
    conch_target: ConchTarget = "proj_contrast",
    conch_patch: ConchPatch = "none",
) -> Expert:
    """Load a frozen expert from the encoder registry (or wrap an already-built encoder).

    Args:
        name: registry name (``uni``, ``phikon``, ``conch``, ``efficientnet-lite0-imagenet``, ...) or an
            :class:`~gpfm.models.Encoder` (then ``weights``, ``device`` and ``dtype`` are ignored).
        weights: as :func:`gpfm.models.create_encoder`: a path, ``"random"``, or None to search the usual
            places.
        device: ``cpu``, ``cuda``, ... (None: CUDA when available).
        dtype: autocast precision (``bf16``/``fp16``/``fp32`` or a torch dtype); None → the training rule of
            :func:`gpfm.pretrain.precision.training_precision` (bf16 on CUDA, fp32 on CPU).
        input_norm: ``shared_imagenet`` [F] or ``per_expert`` [I].
        student_mean: the student crops' normalisation mean.
        student_std: the student crops' normalisation std.
        conch_target: CLS target of a contrastive (CONCH) expert.
        conch_patch: patch target of a contrastive (CONCH) expert: ``none`` [F] or ``trunk_tokens`` [I].

    Returns:
        An :class:`Expert` in eval mode with frozen parameters.
    """
    if isinstance(name, Encoder):
        encoder = name
    else:
        from gpfm.pretrain.precision import training_precision
        from gpfm.runtime import resolve_device

        dev = resolve_device(device)
        precision = _PRECISION_OF[dtype] if isinstance(dtype, torch.dtype) else training_precision(dtype, dev)
        encoder = create_encoder(name, weights=weights, device=dev, precision=precision, verbose=False)
    return Expert(
        encoder,
        input_norm=input_norm,
        student_mean=student_mean,
        student_std=student_std,
        conch_target=conch_target,
        conch_patch=conch_patch,
    )
