"""Real-data UNKD experiment on one CPU: does distilling a real expert help a small ViT on LC25000 lung tiles?

Pipeline (all real data, nothing synthetic):

1. LC25000 lung (900 tiles, 3 classes) is split 70/30 into probe-train / probe-test WITHOUT splitting a
   duplicate group: tiles sharing a SHA-256 or a rotation/flip-invariant 8x8 average hash (LC25000 is built by
   rotating/flipping 750 source images) are one group (``gpfm.eval.data.splits``: union-find + stratified split).
2. Extra unlabeled tiles are cut from the real slides in ``../shared/data/wsi`` with :mod:`gpfm.wsi`
   (tissue segmentation, the ``gpfm-128um`` recipe with 50% overlap: 128 µm tiles stored at 224 px;
   slides without a recorded µm/px are skipped and reported).
3. A small ViT is pretrained on probe-train tiles + slide tiles (never on probe-test) twice, same seed and
   steps: SSL only (DINO + iBOT + KoLeo) and SSL + the REAL EfficientNet-Lite0 ImageNet expert
   (1280-d pooled CLS target + its 1280-channel feature map as patch target).
4. Linear probe (standardised features, sklearn logistic regression) on the EMA-teacher CLS, trained on
   probe-train and scored on probe-test, for: random-init student, SSL-only, SSL + expert, and the expert.

Usage:
    PYTHONPATH=src python experiments/distill_lc25000/run.py --steps 200 --out runs/distill_lc25000
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
LC = DATA / "patches" / "lc25000_lung_224"
EXPERT = "efficientnet-lite0-imagenet"


def split_lc25000(seed: int = 0) -> dict:
    """Rows, labels and the duplicate-aware probe split of LC25000."""
    from gpfm.eval.data.splits import (
        check_groups_disjoint,
        dihedral_average_hash,
        merge_groups,
        stratified_group_split,
    )

    with open(LC / "labels.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["file"])
    names = sorted({r["label"] for r in rows})
    labels = np.array([names.index(r["label"]) for r in rows])
    paths = [LC / r["file"] for r in rows]
    groups = merge_groups([r["sha256"] for r in rows], [dihedral_average_hash(p) for p in paths])
    split = stratified_group_split(labels, groups, test_size=0.3, val_size=0.0, seed=seed)
    check_groups_disjoint(split, groups)
    return {"paths": paths, "labels": labels, "names": names, "split": split, "groups": groups}


def cut_slide_tiles(out: Path, per_slide: int, seed: int = 0) -> list[Path]:
    """Tissue tiles from the real slides (gpfm-128um recipe, 224 px PNGs), at most ``per_slide`` each."""
    from gpfm.wsi import TilingConfig, open_slide, read_tiles, resize_tiles, segment_tissue, tile_slide

    out.mkdir(parents=True, exist_ok=True)
    done = sorted(out.glob("*.png"))
    if done:
        return done
    paths: list[Path] = []
    rng = np.random.default_rng(seed)
    for slide_path in sorted((DATA / "wsi").glob("*.svs")):
        try:
            slide = open_slide(slide_path)
            # 128 µm tiles (0.5 µm/px, 256 px) with 50% overlap: ~4x more crops from the one slide with an mpp
            grid = tile_slide(
                slide, segment_tissue(slide), TilingConfig.from_recipe("gpfm-128um", overlap=128)
            )
        except Exception as exc:  # a slide without mpp or tissue is skipped, and said so
            print(f"skip {slide_path.name}: {type(exc).__name__}: {exc}")
            continue
        pick = np.sort(rng.choice(len(grid), size=min(per_slide, len(grid)), replace=False))
        tiles = resize_tiles(read_tiles(slide, grid, pick), 224)
        for i, tile in zip(pick, tiles, strict=True):
            p = out / f"{slide_path.stem}_{int(i):06d}.png"
            Image.fromarray(tile).save(p)
            paths.append(p)
        print(f"{slide_path.name}: {len(grid)} tissue tiles, kept {len(pick)}")
    return paths


def experiment_config(out: Path, file_list: Path, steps: int, with_expert: bool, seed: int):
    from gpfm.pretrain.config import load_config

    overrides = [
        # sized for a shared 2-core CPU: a 4-block, 128-wide ViT/16 on 96/48 px crops (6x6 / 3x3 tokens)
        "student.embed_dim=128",
        "student.depth=4",
        "student.num_heads=4",
        "student.drop_path_rate=0.1",
        "heads.dino_out_dim=1024",
        "heads.dino_hidden_dim=256",
        "heads.dino_bottleneck_dim=64",
        "heads.distill_bottleneck_dim=64",
        f"data.root={file_list}",
        "data.batch_size_per_gpu=16",
        "data.global_crops_size=96",
        "data.local_crops_size=48",
        "data.local_crops_number=2",
        "optim.base_lr=1e-3",
        "optim.lr_scaling=none",
        f"optim.epochs={steps}",
        "optim.iters_per_epoch=1",
        f"optim.warmup_epochs={max(1, steps // 10)}",
        "optim.freeze_last_layer_epochs=0",
        "optim.layerwise_decay=1.0",
        "optim.momentum_teacher=0.99",
        f"ssl.warmup_teacher_temp_iters={max(1, steps // 3)}",
        f"train.output_dir={out}",
        f"train.seed={seed}",
        "train.stop_at_iteration=null",
        f"train.checkpoint_every={steps}",
        "train.log_every=2",
        "train.teacher_checkpoint_every=0",
        f"distill.experts=[{{name: {EXPERT}, cls_weight: 1.0, patch_weight: 0.25}}]"
        if with_expert
        else "distill.experts=[]",
    ]
    return load_config(None, overrides, preset="tiny_cpu")


@torch.no_grad()
def vit_features(backbone: torch.nn.Module, paths: list[Path], size: int) -> np.ndarray:
    """EMA-teacher CLS of whole tiles resized to the global-crop size (ImageNet normalisation)."""
    from gpfm.models.spec import Preprocess
    from gpfm.models.transforms import PilTransform

    tf = PilTransform(Preprocess(input_size=size))
    backbone.eval()
    feats = []
    for i in range(0, len(paths), 64):
        x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[i : i + 64]])
        feats.append(backbone.forward_tokens(x)[:, 0].float().numpy())
    return np.concatenate(feats)


def expert_features(paths: list[Path]) -> np.ndarray:
    from gpfm.models import create_encoder

    enc = create_encoder(EXPERT, device="cpu", precision="fp32", verbose=False)
    out = []
    for i in range(0, len(paths), 64):
        out.append(
            enc.embed(torch.stack([enc.transform(Image.open(p).convert("RGB")) for p in paths[i : i + 64]]))
        )
    return torch.cat(out).numpy()


def linear_probe(feats: np.ndarray, labels: np.ndarray, split: np.ndarray) -> dict[str, float]:
    """Logistic regression (C=1, standardised features) on probe-train, scored on probe-test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, te = split == "train", split == "test"
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    clf.fit(feats[tr], labels[tr])
    pred = clf.predict(feats[te])
    return {
        "accuracy": float(accuracy_score(labels[te], pred)),
        "balanced_accuracy": float(balanced_accuracy_score(labels[te], pred)),
        "macro_f1": float(f1_score(labels[te], pred, average="macro")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "distill_lc25000")
    ap.add_argument("--slide-tiles", type=int, default=300, help="max tiles cut per slide")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from gpfm.pretrain.export import export_checkpoint, load_exported_encoder
    from gpfm.pretrain.meta_arch import MetaArch
    from gpfm.pretrain.train import _seed_everything, train
    from gpfm.runtime import machine_info

    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    lc = split_lc25000(args.seed)
    n_groups = len(set(lc["groups"].tolist()))
    slide_tiles = cut_slide_tiles(args.out / "slide_tiles", args.slide_tiles, args.seed)
    train_paths = [p for p, s in zip(lc["paths"], lc["split"], strict=True) if s == "train"] + slide_tiles
    file_list = args.out / "pretrain_tiles.txt"
    file_list.write_text("\n".join(str(p) for p in train_paths) + "\n")
    print(
        f"LC25000: {len(lc['paths'])} tiles in {n_groups} duplicate groups; probe-train "
        f"{int((lc['split'] == 'train').sum())}, probe-test {int((lc['split'] == 'test').sum())}; "
        f"pretraining on {len(train_paths)} tiles ({len(slide_tiles)} from slides)"
    )
    results: dict[str, dict] = {}
    cfg0 = experiment_config(args.out / "init", file_list, args.steps, False, args.seed)
    _seed_everything(args.seed, 0)
    init = MetaArch(cfg0, torch.device("cpu"), experts={})
    size = cfg0.data.global_crops_size
    results["random-init student"] = linear_probe(
        vit_features(init.teacher.backbone, lc["paths"], size), lc["labels"], lc["split"]
    )
    print("random init", results["random-init student"], flush=True)
    timings = {}
    for name, with_expert in (("SSL-only student", False), ("SSL + expert student", True)):
        run = args.out / ("ssl_expert" if with_expert else "ssl_only")
        cfg = experiment_config(run, file_list, args.steps, with_expert, args.seed)
        t0 = time.time()
        res = train(cfg)
        timings[name] = time.time() - t0
        enc = load_exported_encoder(export_checkpoint(res.checkpoint, run / "export"))
        results[name] = linear_probe(vit_features(enc.model, lc["paths"], size), lc["labels"], lc["split"])
        print(name, results[name], f"{timings[name]:.0f}s", flush=True)
    results[f"expert ({EXPERT}, 224 px)"] = linear_probe(
        expert_features(lc["paths"]), lc["labels"], lc["split"]
    )
    print("expert", results[f"expert ({EXPERT}, 224 px)"])
    summary = {
        "results": results,
        "steps": args.steps,
        "train_seconds": timings,
        "total_seconds": time.time() - t_start,
        "n_lc25000": len(lc["paths"]),
        "n_groups": n_groups,
        "n_probe_train": int((lc["split"] == "train").sum()),
        "n_probe_test": int((lc["split"] == "test").sum()),
        "n_slide_tiles": len(slide_tiles),
        "pretrain_tiles": len(train_paths),
        "config_ssl_expert": experiment_config(args.out, file_list, args.steps, True, args.seed).to_dict(),
        "machine": machine_info(),
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    plot_curves(args.out)
    print(json.dumps({k: v for k, v in summary.items() if k != "config_ssl_expert"}, indent=2, default=str))


def plot_curves(out: Path) -> None:
    """Objective and per-term curves of both runs in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpfm.pretrain.metrics_log import read_metrics

    keys = [
        "objective",
        "loss/dino_local_crops_loss",
        "loss/dino_global_crops_loss",
        "loss/ibot_loss",
        "loss/koleo_loss",
        f"loss/distill_{EXPERT}_cls_loss",
        f"loss/distill_{EXPERT}_patch_loss",
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for run, style in (("ssl_only", "-"), ("ssl_expert", "--")):
        path = out / run / "metrics.jsonl"
        if not path.is_file():
            continue
        recs = read_metrics(path)
        for ax, key in zip(axes, keys, strict=True):
            pts = [(r["iteration"], r[key]) for r in recs if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=run)
            ax.set_title(key.split("/")[-1], fontsize=8)
    for ax in axes:
        ax.set_xlabel("iteration")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)


if __name__ == "__main__":
    main()
