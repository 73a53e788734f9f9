"""Wall time of the ROI protocols on 100k × 1024 features and of ABMIL on 500 bags × 2,000 tiles, as JSON.

Usage: python benchmarks/eval_speed.py [--n 100000] [--dim 1024] [--classes 10] [--mil-bags 500]
       [--mil-tiles 2000] [--skip-mil] [--out eval_speed.json]

ROI features are random Gaussian class blobs split 80/10/10 (train = gallery, val, test = queries). Runs are
capped so the whole script takes minutes; each capped protocol also reports its per-unit time so the
uncapped cost can be extrapolated:

* ``roi.linear.gpfm``: a fixed number of epochs (``--gpfm-epochs``; the pinned protocol runs up to 3,000 with
  early stopping) → seconds per epoch (313 AdamW steps of 256 + one val AUROC);
* ``roi.linear.uni``: L-BFGS ``max_iter`` capped (``--lbfgs-iter``; pinned 1,000) → seconds per iteration;
* ``roi.linear.sk``: ``c_mode=adaptive`` with ``max_iter`` capped (``--sk-iter``; pinned 10,000);
* kNN and retrieval protocols run uncapped (exact search of 10k queries against 80k keys).

ABMIL: the registered ``wsi.abmil.gpfm`` protocol on one fixed 70/10/20 split for ``--mil-epochs`` epochs
(early stopping off), bootstrap and attention writing off. To stay within memory the 500 bags are views of
``--mil-unique`` distinct random (2,000, 1,024) tensors: every bag still runs a full forward/backward, so the
compute equals 500 distinct bags.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpfm.eval import create_protocol
from gpfm.eval.data.roi import RoiFeatures
from gpfm.runtime import machine_info


def roi_features(n: int, dim: int, classes: int, seed: int = 0) -> RoiFeatures:
    """Gaussian class blobs (overlapping, so probes have something to learn) with an 80/10/10 split."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(0.0, 0.15, (classes, dim)).astype(np.float32)
    feats = centres[labels] + rng.normal(0.0, 1.0, (n, dim)).astype(np.float32)
    split = np.array(["train"] * n, dtype=object)
    order = rng.permutation(n)
    split[order[: n // 10]] = "test"
    split[order[n // 10 : n // 5]] = "val"
    return RoiFeatures(feats, labels, [f"class{i}" for i in range(classes)], np.arange(n).astype(str), split)


def time_protocol(name: str, data: Any, **overrides: Any) -> dict[str, Any]:
    """Run one protocol once into a temporary folder; seconds, headline score and the protocol's own facts."""
    proto = create_protocol(name, **overrides)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = proto.run(data, Path(out), task="bench", encoder="random")
        seconds = time.perf_counter() - start
    entry: dict[str, Any] = {
        "protocol": name,
        "overrides": overrides,
        "seconds": round(seconds, 2),
        "primary_metric": result.primary_metric,
        "score": round(result.score, 4),
    }
    prov = result.provenance
    if "selection" in prov:
        entry["epochs_run"] = prov["selection"]["epochs_run"]
        entry["seconds_per_epoch"] = round(seconds / prov["selection"]["epochs_run"], 3)
    if "fit" in prov and "lbfgs_iterations" in prov["fit"]:
        entry["iterations"] = prov["fit"]["lbfgs_iterations"]
        entry["seconds_per_iteration"] = round(seconds / max(1, prov["fit"]["lbfgs_iterations"]), 3)
    if "fit" in prov and "iterations" in prov["fit"]:
        entry["iterations"] = prov["fit"]["iterations"]
    print(json.dumps(entry), flush=True)
    return entry


def time_scoring(data: RoiFeatures) -> dict[str, Any]:
    """The one-off test scoring every classification protocol pays (metrics, bootstrap CIs, artifacts)."""
    from gpfm.eval.roi.common import classification_result

    test = data.indices("test")
    proba = np.random.default_rng(0).dirichlet(np.ones(data.num_classes), size=len(test))
    proto = create_protocol("roi.knn.cl2n")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        classification_result(proto, data, Path(out), task="bench", encoder="random", proba=proba)
        seconds = time.perf_counter() - start
    entry = {
        "component": "test scoring (metrics + 1,000-resample bootstrap CIs + artifacts)",
        "test_items": int(len(test)),
        "seconds": round(seconds, 2),
    }
    print(json.dumps(entry), flush=True)
    return entry


def bench_abmil(bags: int, tiles: int, dim: int, unique: int, epochs: int) -> dict[str, Any]:
    """``wsi.abmil.gpfm`` for a few epochs on one fixed split of ``bags`` bags of ``tiles`` tiles."""
    try:  # the MIL protocol module registers wsi.abmil.gpfm when imported
        import gpfm.eval.families.wsi_classification  # noqa: F401
        from gpfm.eval.data.bags import BagDataset
        from gpfm.eval.data.folds import FoldSplit
    except ImportError as err:
        return bench_abmil_fallback(bags, tiles, dim, unique, epochs, str(err))

    gen = torch.Generator().manual_seed(0)
    pool = [torch.randn(tiles, dim, generator=gen) for _ in range(unique)]
    labels = np.arange(bags) % 2
    for i in range(unique):  # a weak signal so the model has a gradient to follow
        pool[i][: tiles // 20] += 0.5 * (i % 2)
    bag_list = [pool[(i // 2 * 2 + labels[i]) % unique] for i in range(bags)]
    order = np.random.default_rng(0).permutation(bags)
    n_train, n_val = int(0.7 * bags), int(0.1 * bags)
    fold = FoldSplit(
        "bench",
        np.sort(order[:n_train]),
        np.sort(order[n_train : n_train + n_val]),
        np.sort(order[n_train + n_val :]),
    )
    data = BagDataset(
        bags=bag_list,
        labels=labels,
        ids=[f"bag{i:04d}" for i in range(bags)],
        label_names=["neg", "pos"],
        folds=[fold],
    )
    overrides = {
        "max_epochs": epochs,
        "min_epochs": epochs,
        "bootstrap_resamples": 0,
        "save_attention": False,
        "device": "cpu",
    }
    entry = time_protocol("wsi.abmil.gpfm", data, **overrides)
    entry.update(
        {
            "bags": bags,
            "tiles_per_bag": tiles,
            "distinct_bag_tensors": unique,
            "epochs": epochs,
            "train_bags": n_train,
            "seconds_per_epoch_incl_val": round(entry["seconds"] / epochs, 2),
        }
    )
    return entry


def bench_abmil_fallback(
    bags: int, tiles: int, dim: int, unique: int, epochs: int, why: str
) -> dict[str, Any]:
    """An equivalent ABMIL epoch (d→512 ReLU, attention 512→128→1, Adam 2e-4) when the protocol is absent."""
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    pool = [torch.randn(tiles, dim, generator=gen) for _ in range(unique)]
    trunk = nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Dropout(0.25))
    attn = nn.Sequential(nn.Linear(512, 128), nn.Tanh(), nn.Linear(128, 1))
    head = nn.Linear(512, 2)
    params = [*trunk.parameters(), *attn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-4, weight_decay=1e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(bags):
            h = trunk(pool[i % unique])
            a = torch.softmax(attn(h).squeeze(1), 0)
            loss = nn.functional.cross_entropy(head(a @ h)[None], torch.tensor([i % 2]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    entry = {
        "protocol": "equivalent ABMIL loop (wsi.abmil.gpfm unavailable: " + why + ")",
        "bags": bags,
        "tiles_per_bag": tiles,
        "epochs": epochs,
        "seconds": round(seconds, 2),
        "seconds_per_epoch_train_only": round(seconds / epochs, 2),
    }
    print(json.dumps(entry), flush=True)
    return entry


def main() -> None:
    """Parse options, run every timing and print (and optionally write) the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--gpfm-epochs", type=int, default=5)
    ap.add_argument("--lbfgs-iter", type=int, default=50)
    ap.add_argument("--sk-iter", type=int, default=50)
    ap.add_argument("--mil-bags", type=int, default=500)
    ap.add_argument("--mil-tiles", type=int, default=2000)
    ap.add_argument("--mil-unique", type=int, default=40)
    ap.add_argument("--mil-epochs", type=int, default=1)
    ap.add_argument("--skip-mil", action="store_true")
    ap.add_argument("--only", default="", help="comma list of protocol names to run (default all)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()

    data = roi_features(args.n, args.dim, args.classes)
    plan: list[tuple[str, dict[str, Any]]] = [
        ("roi.linear.gpfm", {"max_epochs": args.gpfm_epochs, "patience": args.gpfm_epochs}),
        ("roi.linear.uni", {"max_iter": args.lbfgs_iter}),
        ("roi.linear.sk", {"c_mode": "adaptive", "max_iter": args.sk_iter}),
        ("roi.knn.dinov2", {}),
        ("roi.knn.cl2n", {}),
        ("roi.retrieval.pathobench", {}),
        ("roi.retrieval.thunder", {}),
        ("roi.retrieval.gpfm", {}),
    ]
    only = set(filter(None, args.only.split(",")))
    results = [time_scoring(data)]
    for name, overrides in plan:
        if not only or name in only:
            results.append(time_protocol(name, data, **overrides))
    if not args.skip_mil and (not only or "wsi.abmil.gpfm" in only):
        results.append(bench_abmil(args.mil_bags, args.mil_tiles, args.dim, args.mil_unique, args.mil_epochs))
    report = {
        "benchmark": "eval_speed",
        "machine": machine_info(),
        "roi_features": {"n": args.n, "dim": args.dim, "classes": args.classes, "split": data.counts()},
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)  # the capped sklearn run stops early on purpose
    main()
