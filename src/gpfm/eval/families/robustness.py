"""The robustness family: does an encoder see tissue, or the scanner and the stain?

Task data (``kind: robustness_images``): a folder of ROI images and a CSV ``path,label[,site]`` (``site``: the
hospital, scanner, TCGA tissue-source site or dataset an image came from). Every image is embedded clean and under
a grid of controlled, realistic perturbations, each a deterministic function of the pixels and the item id (so
the feature cache holds it like any dataset):

* ``hed`` — stain jitter in HED space (Tellez et al. 2019): per image, each of the H, E, D channels is scaled by
  U(1 − s, 1 + s) and shifted by U(−s, s); strengths s ∈ {0.02, 0.05, 0.1};
* ``jpeg`` — a JPEG round trip at quality 90, 50, 20;
* ``blur`` — a Gaussian blur of σ = 0.5, 1, 2 px;
* ``gamma`` — a gamma curve of 0.8, 1.25, 1.5 (brightness / scanner tone);
* ``macenko`` — Macenko stain normalisation (torchstain, to its standard H&E reference), blended with the
  original at 0.5 and applied fully at 1.0 (a tile without stain to separate, e.g. glass, is left as it is).

Protocols (pinned defaults in each ``Config``; direction of the primary metric in its name):

* ``robust.invariance`` — on the test split, per perturbation and strength: the mean cosine similarity of
  perturbed and clean features; the kNN label agreement (a cosine kNN, k = 20, fitted on clean training
  features, predicts the same label for the perturbed and the clean test image); the accuracy drop of a linear
  probe (logistic regression on standardised clean training features) from clean to perturbed test images.
  Primary: ``mean_cosine`` over the grid (higher is better).
* ``robust.site_signature`` — how well a probe predicts the **site** from features, in a label-balanced design
  (within each class, the same number of images from every site, so biology cannot explain the site): 5-fold
  stratified cross-validated balanced accuracy of a logistic regression, against chance 1/S. Primary:
  ``site_leakage`` = (balanced accuracy − 1/S) / (1 − 1/S), clipped at 0 (lower is better; 0 = chance).
* ``robust.cross_site`` — generalisation to unseen sites: a linear probe trained on all but one site and tested
  on the held-out one (every site in turn), against random splits with the same test size. Reports both
  balanced accuracies and the ``site_gap`` (random − held-out site; lower is better), primary.

The invariance curves are drawn in the HTML report (artifact kind ``invariance``).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpfm.atomic import write_json_atomic
from gpfm.eval.data.cache import RoiFeatureCache
from gpfm.eval.data.labels import DegenerateTaskError, check_two_classes, handle_missing_labels
from gpfm.eval.data.splits import stratified_group_split
from gpfm.eval.family import Family, register_family
from gpfm.eval.protocol import Protocol, ProtocolResult, TaskContext, register_protocol, register_task_loader

register_family(Family("robustness", "invariance to stain/scanner changes, site signature, cross-site transfer"))

#: The default perturbation grid: kind → strengths.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "hed": (0.02, 0.05, 0.1),
    "jpeg": (90, 50, 20),
    "blur": (0.5, 1.0, 2.0),
    "gamma": (0.8, 1.25, 1.5),
    "macenko": (0.5, 1.0),
}


def _rng(key: str, salt: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{salt}|{key}".encode()).digest()[:8], "little"))


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one strength (an :class:`gpfm.eval.data.cache.ImageView`)."""

    kind: str
    strength: float

    @property
    def name(self) -> str:
        """``kind:strength``, part of the feature-cache key."""
        return f"{self.kind}:{self.strength:g}"

    def apply(self, rgb: np.ndarray, key: str) -> np.ndarray:
        """The perturbed RGB uint8 image (deterministic in the pixels and ``key``)."""
        import cv2
        from PIL import Image

        if self.kind == "hed":
            from skimage.color import hed2rgb, rgb2hed

            rng = _rng(key, self.name)
            hed = rgb2hed(rgb)
            alpha = rng.uniform(1 - self.strength, 1 + self.strength, 3)
            beta = rng.uniform(-self.strength, self.strength, 3)
            out = hed2rgb(hed * alpha + beta)
            return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if self.kind == "jpeg":
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="JPEG", quality=int(self.strength))
            return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        if self.kind == "blur":
            return cv2.GaussianBlur(rgb, (0, 0), float(self.strength))
        if self.kind == "macenko":
            return _macenko_blend(rgb, float(self.strength))
        if self.kind == "gamma":
            table = np.clip(255.0 * (np.arange(256) / 255.0) ** float(self.strength) + 0.5, 0, 255).astype(np.uint8)
            return table[rgb]
        raise ValueError(f"unknown perturbation {self.kind!r}; known: {', '.join(DEFAULT_GRID)}")


def _macenko_blend(rgb: np.ndarray, weight: float) -> np.ndarray:
    """``(1 − w)·rgb + w·Macenko(rgb)`` with torchstain's standard H&E reference (no fit: nothing data-dependent)."""
    import torchstain

    try:
        normalised = torchstain.normalizers.MacenkoNormalizer(backend="numpy").normalize(I=rgb, stains=False)[0]
    except Exception:  # noqa: BLE001 - no stain to separate (glass, pen): the tile is left as it is
        return rgb.copy()
    out = (1.0 - weight) * rgb.astype(np.float32) + weight * normalised.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def perturbation_grid(spec: Any) -> list[Perturbation]:
    """``default`` or a mapping kind → strengths (suite YAML) as perturbations."""
    grid = DEFAULT_GRID if spec in (None, "default") else spec
    if not isinstance(grid, dict):
        raise ValueError("robustness_images perturbations: 'default' or a mapping kind: [strengths]")
    unknown = sorted(set(grid) - set(DEFAULT_GRID))
    if unknown:
        raise ValueError(f"robustness_images perturbations: unknown kind(s) {unknown}; "
                         f"known: {', '.join(DEFAULT_GRID)}")
    return [Perturbation(kind, float(s)) for kind, strengths in grid.items() for s in strengths]


@dataclass
class RobustnessData:
    """Clean and perturbed features of one image set, with labels, sites and a train/test split."""

    features: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    sites: np.ndarray | None
    ids: np.ndarray
    split: np.ndarray
    perturbed: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def tcga_site(name: str, where: Path) -> str:
    """The tissue-source site code of a TCGA barcode in a file name (``TCGA-CR-7395-...`` → ``CR``)."""
    import re

    match = re.search(r"TCGA-([A-Z0-9]{2})-[A-Z0-9]{4}", name)
    if match is None:
        raise ValueError(f"{where}: {name!r} holds no TCGA barcode; use a site column instead of site_from")
    return match.group(1)


def load_robustness_images(data: dict[str, Any], ctx: TaskContext) -> RobustnessData:
    """Embed a labelled (and optionally site-annotated) image set clean and under every perturbation."""
    import pandas as pd

    known = {"kind", "root", "csv", "site_column", "site_from", "perturbations", "split", "missing_labels"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"robustness_images data: unknown key(s) {unknown}; known: {', '.join(sorted(known))}")
    root = Path(str(data["root"])).expanduser()
    root = root if root.is_absolute() else ctx.base_dir / root
    csv_path = Path(str(data.get("csv", "labels.csv")))
    csv_path = csv_path if csv_path.is_absolute() else root / csv_path
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: robustness label CSV not found (columns path,label[,site])")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    path_col = next((c for c in ("path", "file", "filename", "image") if c in table), None)
    if path_col is None or "label" not in table:
        raise ValueError(f"{csv_path}: needs columns path (or file) and label; has {list(table.columns)}")
    keep = handle_missing_labels(table["label"].tolist(), str(data.get("missing_labels", "error")), str(csv_path))
    table = table.loc[keep].sort_values(path_col).reset_index(drop=True)
    ids = table[path_col].astype(str).tolist()
    names = sorted(set(table["label"]))
    labels = np.array([names.index(v) for v in table["label"]])
    site_col = str(data.get("site_column", "site"))
    sites = table[site_col].astype(str).to_numpy() if site_col in table else None
    if data.get("site_from") == "tcga_barcode":  # the tissue-source site: the 2 characters after "TCGA-"
        sites = np.array([tcga_site(Path(p).name, csv_path) for p in ids])
    elif data.get("site_from") not in (None, "column"):
        raise ValueError(f"robustness_images site_from {data['site_from']!r}: use column (default) or tcga_barcode")
    cache = RoiFeatureCache(ctx.cache_dir)
    common = {"weights": ctx.weights, "device": ctx.device, "precision": ctx.precision, "batch_size": ctx.batch_size}
    clean = cache.get_or_embed(root, ids, ctx.encoder, **common)
    row = {item: i for i, item in enumerate(ids)}
    order = np.array([row[i] for i in clean.ids])
    spec = {"test_size": 0.5, "seed": 0, **(data.get("split") or {})}
    split = stratified_group_split(labels[order], clean.sha256.tolist(), spec["test_size"], 0.0, spec["seed"])
    check_two_classes(labels[order], names, {"train": np.flatnonzero(split == "train"),
                                             "test": np.flatnonzero(split == "test")}, str(csv_path))
    perturbed = {}  # after the label check: a degenerate task costs no perturbed embedding
    for p in perturbation_grid(data.get("perturbations")):
        perturbed[p.name] = cache.get_or_embed(root, ids, ctx.encoder, view=p, **common).features
    return RobustnessData(clean.features, labels[order], names, None if sites is None else sites[order],
                          np.asarray(clean.ids), split, perturbed,
                          {"encoder": ctx.encoder, "weights_sha256": clean.key.weights_sha, "split": spec,
                           "n_images": len(ids), "csv": str(csv_path)})


register_task_loader("robustness_images")(load_robustness_images)


def _probe(x_train: np.ndarray, y_train: np.ndarray, c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, random_state=seed)).fit(
        x_train, y_train)


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, pred))


class _Robustness(Protocol):
    family = "robustness"
    data_kind = RobustnessData
    version = 1


@register_protocol
class Invariance(_Robustness):
    """``robust.invariance``: cosine similarity, kNN agreement and probe accuracy drop under perturbations."""

    name = "robust.invariance"
    primary_metric = "mean_cosine"

    @dataclass
    class Config:
        """Pinned defaults."""

        k: int = 20
        probe_c: float = 1.0
        seed: int = 0

    def run(self, data: RobustnessData, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Score every perturbation of the test split against the clean features."""
        from sklearn.neighbors import KNeighborsClassifier

        c = self.config
        tr, te = data.split == "train", data.split == "test"
        x, y = data.features, data.labels
        knn = KNeighborsClassifier(n_neighbors=min(c.k, int(tr.sum())), metric="cosine").fit(x[tr], y[tr])
        probe = _probe(x[tr], y[tr], c.probe_c, c.seed)
        clean_knn, clean_acc = knn.predict(x[te]), _balanced_accuracy(y[te], probe.predict(x[te]))
        metrics: dict[str, float] = {"clean_balanced_accuracy": clean_acc}
        curves: dict[str, dict[str, list[float]]] = {}
        for name, feats in data.perturbed.items():
            kind, strength = name.split(":")
            a, b = x[te], feats[te]
            cos = float(np.mean(np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                                               1e-12)))
            agree = float(np.mean(knn.predict(b) == clean_knn))
            drop = clean_acc - _balanced_accuracy(y[te], probe.predict(b))
            metrics.update({f"cosine@{name}": cos, f"knn_agreement@{name}": agree, f"accuracy_drop@{name}": drop})
            curve = curves.setdefault(kind, {"strength": [], "cosine": [], "knn_agreement": [], "accuracy_drop": []})
            for key, value in (("strength", float(strength)), ("cosine", cos), ("knn_agreement", agree),
                               ("accuracy_drop", drop)):
                curve[key].append(value)
        for stat in ("cosine", "knn_agreement", "accuracy_drop"):
            metrics[f"mean_{stat}"] = float(np.mean([v for k, v in metrics.items() if k.startswith(f"{stat}@")]))
        write_json_atomic(out_dir / "invariance.json", curves)
        return self.make_result(task=task, encoder=encoder, metrics=metrics,
                                artifacts={"invariance": "invariance.json"},
                                provenance={**data.provenance, "n_test": int(te.sum())})


def _label_balanced(labels: np.ndarray, sites: np.ndarray, seed: int) -> np.ndarray:
    """Row indices with, for every class, the same number of images from every site (the smallest count)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        per_site = [np.flatnonzero((labels == label) & (sites == s)) for s in np.unique(sites)]
        n = min(len(rows) for rows in per_site)
        chosen.extend(rng.choice(rows, n, replace=False) for rows in per_site if n)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _need_sites(data: RobustnessData, protocol: str) -> np.ndarray:
    if data.sites is None or len(np.unique(data.sites)) < 2:
        raise DegenerateTaskError(f"{protocol} needs a site column with at least two sites in the task's CSV "
                                  f"({data.provenance.get('csv')}); add one, or run robust.invariance only")
    return data.sites


@register_protocol
class SiteSignature(_Robustness):
    """``robust.site_signature``: how well the site is predicted from features (label-balanced; lower is better)."""

    name = "robust.site_signature"
    primary_metric = "site_leakage"

    @dataclass
    class Config:
        """Pinned defaults."""

        folds: int = 5
        probe_c: float = 1.0
        seed: int = 0

    def run(self, data: RobustnessData, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Cross-validated site prediction on a label-balanced subset."""
        from sklearn.model_selection import StratifiedKFold

        c = self.config
        sites = _need_sites(data, self.name)
        rows = _label_balanced(data.labels, sites, c.seed)
        names = sorted(set(sites[rows]))
        target = np.array([names.index(s) for s in sites[rows]])
        folds = min(c.folds, int(np.bincount(target).min()))
        if folds < 2:
            raise DegenerateTaskError(f"{self.name}: too few label-balanced images per site for cross-validation")
        pred = np.empty_like(target)
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=c.seed).split(rows, target):
            pred[test] = _probe(data.features[rows][train], target[train], c.probe_c, c.seed).predict(
                data.features[rows][test])
        bacc = _balanced_accuracy(target, pred)
        chance = 1.0 / len(names)
        metrics = {"site_balanced_accuracy": bacc, "site_chance": chance,
                   "site_leakage": max(0.0, (bacc - chance) / (1.0 - chance))}
        return self.make_result(task=task, encoder=encoder, metrics=metrics,
                                provenance={**data.provenance, "sites": names, "n_balanced": int(len(rows))})


@register_protocol
class CrossSite(_Robustness):
    """``robust.cross_site``: leave-one-site-out accuracy against random splits of the same size."""

    name = "robust.cross_site"
    primary_metric = "site_gap"

    @dataclass
    class Config:
        """Pinned defaults."""

        random_repeats: int = 5
        probe_c: float = 1.0
        seed: int = 0

    def run(self, data: RobustnessData, out_dir: Path, *, task: str, encoder: str) -> ProtocolResult:
        """Held-out-site and random-split balanced accuracies of a linear label probe."""
        c = self.config
        sites = _need_sites(data, self.name)
        x, y = data.features, data.labels
        rng = np.random.default_rng(c.seed)
        held, rand, per_site = [], [], {}
        for site in sorted(set(sites)):
            test = sites == site
            if len(np.unique(y[~test])) < 2 or len(np.unique(y[test])) < 2:
                continue
            score = _balanced_accuracy(y[test], _probe(x[~test], y[~test], c.probe_c, c.seed).predict(x[test]))
            held.append(score)
            per_site[str(site)] = score
            for _ in range(c.random_repeats):
                perm = rng.permutation(len(y))
                te, tr = perm[: int(test.sum())], perm[int(test.sum()):]
                if len(np.unique(y[tr])) > 1:
                    rand.append(_balanced_accuracy(y[te], _probe(x[tr], y[tr], c.probe_c, c.seed).predict(x[te])))
        if not held:
            raise DegenerateTaskError(f"{self.name}: no site leaves two classes on both sides of the split")
        metrics = {"cross_site_balanced_accuracy": float(np.mean(held)),
                   "random_split_balanced_accuracy": float(np.mean(rand)),
                   "site_gap": float(np.mean(rand) - np.mean(held))}
        write_json_atomic(out_dir / "per_site.json", per_site)
        return self.make_result(task=task, encoder=encoder, metrics=metrics, artifacts={"per_site": "per_site.json"},
                                provenance={**data.provenance, "held_out_sites": sorted(per_site)})


def invariance_figure(curves: dict[str, Any]) -> str:
    """Cosine similarity to the clean features vs perturbation strength, one panel per kind, a line per encoder."""
    from gpfm.eval.report.plots import figure_to_data_uri, panels

    kinds = sorted({k for per_encoder in curves.values() for k in per_encoder})
    fig, axes = panels(len(kinds))
    for ax, kind in zip(axes, kinds, strict=False):
        for encoder, per_encoder in curves.items():
            if kind in per_encoder:
                ax.plot(per_encoder[kind]["strength"], per_encoder[kind]["cosine"], marker="o", label=encoder)
        ax.set_title(kind)
        ax.set_xlabel("strength")
        ax.set_ylabel("cosine to clean")
        ax.legend(fontsize=7)
    return figure_to_data_uri(fig)


def _register_drawer() -> None:
    from gpfm.eval.report.artifacts import register_drawer

    register_drawer("invariance", "Invariance to stain, JPEG, blur and gamma changes", invariance_figure)


_register_drawer()
__all__ = ["DEFAULT_GRID", "Perturbation", "RobustnessData", "load_robustness_images"]
