"""Matplotlib figures for the HTML report, as inline ``data:image/png;base64`` URIs (no files, no network).

Each function takes already-loaded artifact content (see the artifact conventions in
:mod:`gpfm.eval.protocol`) keyed by encoder, and draws one small-multiples figure with one panel per encoder.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless and deterministic; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_PANELS = 6
_DPI = 80


def figure_to_data_uri(fig: Any) -> str:
    """Render a figure as a base64 PNG data URI and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def panels(n: int, width: float = 3.6, height: float = 3.0) -> tuple[Any, list[Any]]:
    """A figure with ``n`` panels (at most :data:`MAX_PANELS`), three per row; returns (figure, axes)."""
    n = max(1, min(n, MAX_PANELS))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def rank_chart(
    encoders: list[str],
    average_rank: list[float | None],
    mean_score: list[float | None],
    title: str = "overall",
) -> str:
    """Two bar panels: average rank (lower is better) and mean score per encoder."""
    fig, (ax_rank, ax_score) = plt.subplots(1, 2, figsize=(10, 0.45 * len(encoders) + 1.4))
    ypos = np.arange(len(encoders))
    ranks = [r if r is not None else 0.0 for r in average_rank]
    scores = [s if s is not None else 0.0 for s in mean_score]
    ax_rank.barh(ypos, ranks, color="#3b6ea8")
    ax_rank.set_yticks(ypos, encoders)
    ax_rank.invert_yaxis()
    ax_rank.set_xlabel("average rank (1 = best)")
    ax_rank.set_title(f"Average rank, {title}")
    ax_score.barh(ypos, scores, color="#5a9a5a")
    ax_score.set_yticks(ypos, encoders)
    ax_score.invert_yaxis()
    ax_score.set_xlabel("mean primary metric")
    ax_score.set_title(f"Mean score, {title}")
    for ax, vals in ((ax_rank, ranks), (ax_score, scores)):
        for y, v in zip(ypos, vals, strict=True):
            ax.text(v, y, f" {v:.3g}", va="center", fontsize=8)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def rank_heatmap(units: list[str], encoders: list[str], ranks: Mapping[str, Mapping[str, float]]) -> str:
    """Task × encoder grid of ranks (darker = better); blank where an encoder has no number."""
    grid = np.full((len(units), len(encoders)), np.nan)
    for i, u in enumerate(units):
        for j, e in enumerate(encoders):
            if e in ranks.get(u, {}):
                grid[i, j] = ranks[u][e]
    fig, ax = plt.subplots(figsize=(1.2 * len(encoders) + 3, 0.35 * len(units) + 1.5))
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto", vmin=1, vmax=max(len(encoders), 2))
    ax.set_xticks(range(len(encoders)), encoders, rotation=30, ha="right")
    ax.set_yticks(range(len(units)), units)
    for i in range(len(units)):
        for j in range(len(encoders)):
            if not np.isnan(grid[i, j]):
                dark = grid[i, j] > (1 + max(len(encoders), 2)) / 2  # viridis_r is dark for poor ranks
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:g}",
                    ha="center",
                    va="center",
                    color="white" if dark else "black",
                    fontsize=8,
                )
    fig.colorbar(im, ax=ax, label="rank")
    ax.set_title("Rank per task (1 = best)")
    fig.tight_layout()
    return figure_to_data_uri(fig)


def roc_figure(curves: Mapping[str, Mapping[str, Any]]) -> str:
    """ROC curves per class, one panel per encoder (artifact ``roc_curves``)."""
    fig, axes = panels(len(curves))
    for ax, (enc, data) in zip(axes, curves.items(), strict=False):
        for cls, c in data.get("classes", {}).items():
            auc = c.get("auc")
            ax.plot(c["fpr"], c["tpr"], lw=1.3, label=f"{cls} ({auc:.3f})" if auc is not None else str(cls))
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)
        ax.set(
            xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=enc
        )
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return figure_to_data_uri(fig)


def confusion_figure(matrices: Mapping[str, Mapping[str, Any]]) -> str:
    """Row-normalised confusion matrices with counts, a panel per encoder (artifact ``confusion_matrix``)."""
    fig, axes = panels(len(matrices), 3.8, 3.4)
    for ax, (enc, data) in zip(axes, matrices.items(), strict=False):
        counts = np.asarray(data["matrix"], dtype=float)
        labels = [str(x) for x in data.get("labels", range(len(counts)))]
        frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=enc)
        if len(labels) <= 12:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(
                        j,
                        i,
                        f"{int(counts[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black",
                    )
    fig.tight_layout()
    return figure_to_data_uri(fig)


def km_figure(curves: Mapping[str, Mapping[str, Any]]) -> str:
    """Kaplan–Meier curves of predicted risk groups, one panel per encoder (artifact ``km_curves``)."""
    fig, axes = panels(len(curves))
    for ax, (enc, data) in zip(axes, curves.items(), strict=False):
        for group, g in data.get("groups", {}).items():
            ax.step(g["time"], g["survival"], where="post", lw=1.4, label=f"{group} (n={g.get('n', '?')})")
        p = data.get("logrank_p")
        ax.set(
            ylim=(0, 1.02),
            xlabel="time",
            ylabel="survival probability",
            title=f"{enc}" + (f"  log-rank p={p:.2g}" if isinstance(p, (int, float)) else ""),
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def curves_figure(curves: Mapping[str, Mapping[str, Any]]) -> str:
    """Training loss and validation metric per epoch, one panel per encoder (artifact ``curves``)."""
    fig, axes = panels(len(curves))
    for ax, (enc, data) in zip(axes, curves.items(), strict=False):
        epochs = data.get("epoch") or list(range(len(data.get("train_loss", []))))
        if data.get("train_loss"):
            ax.plot(
                epochs[: len(data["train_loss"])], data["train_loss"], color="#c0504d", label="train loss"
            )
        ax.set(xlabel="epoch", ylabel="train loss", title=enc)
        if data.get("val_metric"):
            ax2 = ax.twinx()
            ax2.plot(
                epochs[: len(data["val_metric"])], data["val_metric"], color="#3b6ea8", label="val metric"
            )
            ax2.set_ylabel("val metric")
            best = data.get("best_epoch")
            if isinstance(best, (int, float)):
                ax2.axvline(best, ls="--", color="grey", lw=0.8)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return figure_to_data_uri(fig)


def fewshot_figure(curves: Mapping[str, Mapping[str, Any]]) -> str:
    """Few-shot balanced accuracy vs shots per class, one line per encoder with the episode 2.5–97.5% band.

    Artifact ``fewshot``: ``{"shots": [n...], "balanced_accuracy": [{"mean", "p2.5", "p97.5", ...}, ...]}``.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for enc, data in curves.items():
        shots = data.get("shots", [])
        summary = data.get("balanced_accuracy", [])
        if not shots or len(summary) != len(shots):
            continue
        mean = [s["mean"] for s in summary]
        ax.plot(shots, mean, marker="o", lw=1.4, label=enc)
        if all("p2.5" in s and "p97.5" in s for s in summary):
            ax.fill_between(shots, [s["p2.5"] for s in summary], [s["p97.5"] for s in summary], alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="shots per class", ylabel="balanced accuracy", title="SimpleShot (mean, 2.5–97.5% of episodes)"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def cd_diagram(average_ranks: Mapping[str, float], cd: float, n_tasks: int) -> str:
    """Critical-difference diagram of average ranks (1 = best, left) with the Nemenyi CD as a scale bar.

    A thick bar joins every maximal group of encoders whose average ranks differ by less than CD.
    """
    items = sorted(average_ranks.items(), key=lambda kv: kv[1])
    k = len(items)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * k))
    lo, hi = 1, max(k, 2)
    ax.set_xlim(lo - 0.3, hi + 0.3)
    ax.set_ylim(-(k + 1.5), 1.6)
    ax.hlines(0, lo, hi, color="black", lw=1)
    for r in range(lo, hi + 1):
        ax.vlines(r, 0, 0.15, color="black", lw=1)
        ax.text(r, 0.3, str(r), ha="center", fontsize=8)
    ax.hlines(1.2, lo, lo + cd, color="#c0504d", lw=2)
    ax.text(lo + cd / 2, 1.32, f"CD = {cd:.2f} (Nemenyi, α 0.05, {n_tasks} tasks)", ha="center", fontsize=8)
    for i, (enc, rank) in enumerate(items):
        y = -(i + 1) * 0.8
        ax.vlines(rank, y, 0, color="grey", lw=0.8)
        ax.plot([rank], [0], "o", color="#3b6ea8", ms=4)
        ax.text(rank + 0.05, y, f"{enc} ({rank:.2f})", va="center", fontsize=8)
    groups, last_end = [], -1
    for i in range(k):
        j = max(j for j in range(i, k) if items[j][1] - items[i][1] < cd)
        if j > i and j > last_end:
            groups.append((items[i][1], items[j][1]))
            last_end = j
    for g, (start, end) in enumerate(groups):
        ax.hlines(-0.25 - 0.18 * g, start - 0.03, end + 0.03, color="black", lw=3)
    ax.axis("off")
    fig.tight_layout()
    return figure_to_data_uri(fig)
