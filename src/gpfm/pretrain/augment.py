"""Multi-crop augmentation of UNKD pretraining: 2 global + N local crops per tile.

Per crop, in order: RandomResizedCrop (bicubic) → horizontal flip p 0.5 → [pathology: vertical flip p 0.5,
rotation by k·90°, k uniform in 0..3] → ColorJitter with p 0.8 → grayscale p 0.2 → Gaussian blur (kernel 9,
σ ~ U(0.1, 2.0)) with the crop's *effective* probability → [global crop 2, ``dinov2`` preset: solarize at 128
with p 0.2] → ToTensor → normalise.

Blur semantics (switch #1). Configured blur probabilities are 1.0 / 0.1 / 0.5 (global 1 / global 2 / local).
DINOv2's blur wrapper applies blur with probability 1 − p, so the released GPFM was trained with effective
probabilities 0.0 / 0.9 / 0.5: ``blur_semantics="dinov2_inverted"`` [F]. ``"intended"`` [I] uses
1.0 / 0.1 / 0.5.

Presets: ``dinov2`` [F] (jitter 0.4/0.4/0.2/0.1). ``pathology`` [I, switch #12]: HED stain
jitter once per source tile with p 0.5 (each of the H, E, D concentrations s ← s·α + β, α ~ U(0.95, 1.05),
β ~ U(−0.05, 0.05), scikit-image's HED matrices, see :func:`hed_jitter`), vertical flips and 90° rotations,
weaker jitter (0.2, 0.2, 0.1, 0.05), grayscale kept, no solarize.

Determinism: every random draw comes from torch's CPU generator, forked and seeded with ``seed`` for the call
(``torch.random.fork_rng`` + ``torch.default_generator.manual_seed``), so the output is a pure function of
(image, seed) and the caller's global RNG state is untouched.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from gpfm.models.spec import IMAGENET_MEAN, IMAGENET_STD
from gpfm.models.transforms import to_rgb

BlurSemantics = Literal["dinov2_inverted", "intended"]
AugPreset = Literal["dinov2", "pathology"]

CONFIGURED_BLUR_P = {"global_1": 1.0, "global_2": 0.1, "local": 0.5}
BLUR_KERNEL = 9
BLUR_SIGMA = (0.1, 2.0)
SOLARIZE_THRESHOLD = 128
SOLARIZE_P = 0.2
COLOR_JITTER_P = 0.8
GRAYSCALE_P = 0.2
JITTER = {"dinov2": (0.4, 0.4, 0.2, 0.1), "pathology": (0.2, 0.2, 0.1, 0.05)}
HED_JITTER = 0.05
HED_JITTER_P = 0.5


def effective_blur_probability(configured_p: float, semantics: BlurSemantics) -> float:
    """Probability that blur is really applied: 1 − p under ``dinov2_inverted``, p under ``intended``."""
    if semantics == "dinov2_inverted":
        return 1.0 - configured_p
    if semantics == "intended":
        return configured_p
    raise ValueError(f"unknown blur_semantics {semantics!r}; use 'dinov2_inverted' or 'intended'")


class RandomGaussianBlur:
    """Gaussian blur (kernel 9, σ ~ U(0.1, 2.0)) applied with the effective probability of a configured p.

    Args:
        configured_p: the probability written in the config (1.0 / 0.1 / 0.5 for global 1 / 2 / local).
        semantics: how the configured p is interpreted (see :func:`effective_blur_probability`).
    """

    def __init__(self, configured_p: float, semantics: BlurSemantics) -> None:
        self.configured_p = configured_p
        self.semantics = semantics
        self.p = effective_blur_probability(configured_p, semantics)

    def decide(self) -> bool:
        """Draw whether to blur (one ``torch.rand`` from the current generator): u < p_effective."""
        return bool(torch.rand(()) < self.p)

    def __call__(self, image: Image.Image) -> Image.Image:
        """Blur ``image`` with the effective probability (σ drawn after the decision)."""
        if not self.decide():
            return image
        sigma = float(torch.empty(1).uniform_(*BLUR_SIGMA))
        return TF.gaussian_blur(image, kernel_size=[BLUR_KERNEL, BLUR_KERNEL], sigma=[sigma, sigma])


def hed_jitter(image: Image.Image, amount: float = HED_JITTER) -> Image.Image:
    """Stain jitter in HED space: s_c ← s_c·α_c + β_c for c ∈ {H, E, D}, α ~ U(1−a, 1+a), β ~ U(−a, a).

    s = OD · M_hed←rgb with optical density OD = −ln(max(rgb, 1e-6)) (natural units, as in Tellez et al. 2018
    and scikit-image before 0.19), and back rgb = exp(−s · M_rgb←hed), with scikit-image's Ruifrok–Johnston
    matrices. Two deliberate differences from today's ``rgb2hed``/``hed2rgb``: (1) no clipping of negative
    concentrations — real RGB is not in the cone of positive stains, and the clipped round trip changes a real
    H&E tile by ~20 grey levels on average even with no jitter; (2) natural OD units — scikit-image ≥ 0.19
    divides OD by ln(1e6) ≈ 13.8, which would make β = ±0.05 a ±0.69 OD (2×) brightness shift. Draws 6 numbers
    from torch's current generator.
    """
    from skimage.color import hed_from_rgb, rgb_from_hed

    alpha = torch.empty(3).uniform_(1.0 - amount, 1.0 + amount).numpy()
    beta = torch.empty(3).uniform_(-amount, amount).numpy()
    rgb = np.maximum(np.asarray(image, dtype=np.float64) / 255.0, 1e-6)
    stains = (-np.log(rgb)) @ hed_from_rgb
    stains = stains * alpha + beta
    out = np.clip(np.exp(-(stains @ rgb_from_hed)), 0.0, 1.0)
    return Image.fromarray((out * 255.0 + 0.5).astype(np.uint8))


#: Columns of a global crop's geometry row (``global_crops_geometry``): box as fractions of the tile, flips, and
#: counter-clockwise quarter turns applied after the flips.
GEOMETRY_FIELDS = ("top", "left", "height", "width", "hflip", "vflip", "rot90")


class _CropTransform:
    """One crop kind's pipeline (geometric, then photometric, then tensor + normalisation)."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float],
        blur: RandomGaussianBlur,
        solarize_p: float,
        preset: AugPreset,
        normalize: T.Normalize,
    ) -> None:
        self.crop = T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC)
        self.preset = preset
        b, c, s, h = JITTER[preset]
        self.jitter = T.RandomApply(
            [T.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)], p=COLOR_JITTER_P
        )
        self.grayscale = T.RandomGrayscale(p=GRAYSCALE_P)
        self.blur = blur
        self.solarize = (
            T.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=solarize_p) if solarize_p > 0 else None
        )
        self.normalize = normalize

    def geometric(self, image: Image.Image) -> tuple[Image.Image, torch.Tensor]:
        """The geometric crop and its geometry ``[top, left, height, width, hflip, vflip, rot90]``.

        Box coordinates are fractions of the tile's height/width; ``rot90`` counts counter-clockwise quarter
        turns, applied after the flips (:data:`GEOMETRY_FIELDS`). Same random draws as ``RandomResizedCrop``.
        """
        top, left, h, w = T.RandomResizedCrop.get_params(image, self.crop.scale, self.crop.ratio)
        width, height = image.size
        image = TF.resized_crop(image, top, left, h, w, self.crop.size, self.crop.interpolation,
                                antialias=self.crop.antialias)
        hflip = vflip = k = 0
        if torch.rand(()) < 0.5:
            image, hflip = TF.hflip(image), 1
        if self.preset == "pathology":
            if torch.rand(()) < 0.5:
                image, vflip = TF.vflip(image), 1
            k = int(torch.randint(0, 4, ()))
            if k:
                image = image.rotate(90 * k)  # exact for square crops
        geometry = torch.tensor([top / height, left / width, h / height, w / width, hflip, vflip, k],
                                dtype=torch.float64)
        return image, geometry

    def photometric(self, image: Image.Image) -> Image.Image:
        image = self.grayscale(self.jitter(image))
        image = self.blur(image)
        return self.solarize(image) if self.solarize is not None else image

    def __call__(self, image: Image.Image, clean: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.with_geometry(image, clean)[:2]

    def with_geometry(
        self, image: Image.Image, clean: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(augmented crop, clean crop or None, geometry) — see :meth:`geometric`."""
        geo, geometry = self.geometric(image)
        clean_tensor = self.normalize(TF.to_tensor(geo)) if clean else None
        return self.normalize(TF.to_tensor(self.photometric(geo))), clean_tensor, geometry


class MultiCropAugmentation:
    """2 global + ``local_crops_number`` local crops of one tile, reproducible from a seed.

    Args:
        global_crops_scale: RandomResizedCrop area range of the global crops.
        local_crops_scale: area range of the local crops.
        local_crops_number: number of local crops (8).
        global_crops_size: global crop side in px (224).
        local_crops_size: local crop side in px (98).
        blur_semantics: ``dinov2_inverted`` [F] or ``intended`` [I].
        preset: ``dinov2`` [F] or ``pathology`` [I].
        mean: normalisation mean.
        std: normalisation std.
        clean_global_views: also return ``global_crops_clean``: the same geometric global crops without any
            photometric change (for ``expert_view=clean``, switch #14). Draws no extra random numbers.
    """

    def __init__(
        self,
        global_crops_scale: tuple[float, float] = (0.32, 1.0),
        local_crops_scale: tuple[float, float] = (0.05, 0.32),
        local_crops_number: int = 8,
        global_crops_size: int = 224,
        local_crops_size: int = 98,
        blur_semantics: BlurSemantics = "dinov2_inverted",
        preset: AugPreset = "dinov2",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        clean_global_views: bool = False,
    ) -> None:
        if preset not in JITTER:
            raise ValueError(f"unknown augmentation preset {preset!r}; use 'dinov2' or 'pathology'")
        effective_blur_probability(0.5, blur_semantics)  # validates the name
        self.config = {
            "global_crops_scale": tuple(global_crops_scale),
            "local_crops_scale": tuple(local_crops_scale),
            "local_crops_number": local_crops_number,
            "global_crops_size": global_crops_size,
            "local_crops_size": local_crops_size,
            "blur_semantics": blur_semantics,
            "preset": preset,
            "mean": tuple(mean),
            "std": tuple(std),
            "clean_global_views": clean_global_views,
        }
        self.preset, self.blur_semantics = preset, blur_semantics
        self.local_crops_number = local_crops_number
        self.clean_global_views = clean_global_views
        norm = T.Normalize(mean, std)
        solarize = SOLARIZE_P if preset == "dinov2" else 0.0

        def blur(kind: str) -> RandomGaussianBlur:
            return RandomGaussianBlur(CONFIGURED_BLUR_P[kind], blur_semantics)

        self.global_1 = _CropTransform(
            global_crops_size, global_crops_scale, blur("global_1"), 0.0, preset, norm
        )
        self.global_2 = _CropTransform(
            global_crops_size, global_crops_scale, blur("global_2"), solarize, preset, norm
        )
        self.local = _CropTransform(local_crops_size, local_crops_scale, blur("local"), 0.0, preset, norm)

    def describe(self) -> dict[str, Any]:
        """Resolved settings, including effective blur probabilities (for the run manifest)."""
        return {
            **self.config,
            "effective_blur_p": {
                "global_1": self.global_1.blur.p,
                "global_2": self.global_2.blur.p,
                "local": self.local.blur.p,
            },
        }

    def __call__(self, image: Image.Image, seed: int) -> dict[str, list[torch.Tensor]]:
        """Crops of ``image``: ``{"global_crops": [2 × (3,G,G)], "local_crops": [n × (3,L,L)]}``.

        ``global_crops_geometry`` holds each global crop's geometry (2 × (7,), :meth:`_CropTransform.geometric`);
        with ``clean_global_views`` the dict also holds ``global_crops_clean`` (2 × (3,G,G)).
        """
        image = to_rgb(image)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also seeds every accelerator backend, and on a machine
            # without one each of those calls formats a stack trace (~0.4 ms per tile, ~10 % of augmentation)
            torch.default_generator.manual_seed(seed)
            if self.preset == "pathology" and torch.rand(()) < HED_JITTER_P:
                image = hed_jitter(image)
            g1, g1_clean, geo1 = self.global_1.with_geometry(image, self.clean_global_views)
            g2, g2_clean, geo2 = self.global_2.with_geometry(image, self.clean_global_views)
            locals_ = [self.local(image)[0] for _ in range(self.local_crops_number)]
        out: dict[str, list[torch.Tensor]] = {
            "global_crops": [g1, g2],
            "local_crops": locals_,
            "global_crops_geometry": [geo1, geo2],
        }
        if self.clean_global_views:
            out["global_crops_clean"] = [g1_clean, g2_clean]
        return out

    def __repr__(self) -> str:
        return f"MultiCropAugmentation({self.describe()})"
