"""Nearest-neighbour search and the retrieval metrics of the three named retrieval definitions.

Notation: a query q has label y_q and an ordered neighbour list (rank r = 1..k, nearest first) with labels
l_1..l_k drawn from the gallery (keys).

* ``acc@k`` (Patho-Bench): 1 if any l_r = y_q for r ≤ k, averaged over queries.
* ``mv@k``: 1 if the majority label of l_1..l_k equals y_q. Ties between classes with the same count go to the
  class whose best-ranked member comes first (so ``mv@1`` = nearest-neighbour accuracy). The same vote
  predicts the class in THUNDER's majority-vote retrieval.
* ``mAP@k``: mean over queries of AP@k = (1/R_k) Σ_{r≤k} P@r · rel_r, with rel_r = [l_r = y_q], P@r the
  precision of the first r neighbours and R_k = Σ_{r≤k} rel_r (AP@k = 0 when R_k = 0).
* GPFM rank weighting: rank r weighs 1 − 0.1·(r − 1); class scores are the summed weights of the neighbours
  of that class, turned into probabilities by a softmax over classes; ``top-t macro accuracy`` is the mean
  over classes of the fraction of that class's queries whose true class is among the t best-scored classes
  (ties broken towards the lower class index).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Metric = Literal["l2", "cosine"]


def nearest_neighbours(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    metric: Metric = "l2",
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k neighbours of every query among ``keys``, computed in query chunks with torch.

    Args:
        queries: (Q, D) features.
        keys: (N, D) gallery features.
        k: neighbours per query (capped at N).
        metric: ``l2`` (Euclidean distance; smaller = nearer) or ``cosine`` (dot product of the rows as
            given, so L2-normalise first for a true cosine; larger = nearer).
        chunk_size: queries per matrix product (bounds memory to chunk_size × N).

    Returns:
        ``(indices, similarity)``, both (Q, k), nearest first; similarity is −distance for ``l2``.
    """
    if metric not in ("l2", "cosine"):
        raise ValueError(f"unknown retrieval metric {metric!r}; use 'l2' or 'cosine'")
    k = min(int(k), len(keys))
    key_t = torch.as_tensor(np.ascontiguousarray(keys), dtype=torch.float32)
    key_sq = (key_t * key_t).sum(1)
    idx_out, sim_out = [], []
    for start in range(0, len(queries), chunk_size):
        q = torch.as_tensor(np.ascontiguousarray(queries[start : start + chunk_size]), dtype=torch.float32)
        scores = q @ key_t.T
        if metric == "cosine":
            top_sim, top_idx = torch.topk(scores, k, dim=1, largest=True, sorted=True)
        else:
            # rank by 2 q·x − ‖x‖² (= −‖q − x‖² + ‖q‖²) in place; exact distances only for the k kept
            scores.mul_(2.0).sub_(key_sq)
            top_val, top_idx = torch.topk(scores, k, dim=1, largest=True, sorted=True)
            top_sim = -((q * q).sum(1, keepdim=True) - top_val).clamp_min(0.0).sqrt()
        idx_out.append(top_idx.numpy())
        sim_out.append(top_sim.numpy())
    return np.concatenate(idx_out), np.concatenate(sim_out)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32)


def majority_vote(neighbour_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Majority label of each row of (Q, k) neighbour labels; ties go to the class met first in rank order."""
    q, k = neighbour_labels.shape
    counts = np.zeros((q, num_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(q), k), neighbour_labels.ravel()), 1)
    # best (smallest) rank at which each class appears; k when absent
    first_rank = np.full((q, num_classes), k, dtype=np.int64)
    ranks = np.broadcast_to(np.arange(k), (q, k))
    np.minimum.at(first_rank, (np.repeat(np.arange(q), k), neighbour_labels.ravel()), ranks.ravel())
    # lexicographic: larger count first, then earlier first appearance
    key = counts * (k + 1) + (k - first_rank)
    return key.argmax(axis=1)


def retrieval_hits(query_labels: np.ndarray, neighbour_labels: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query ``acc@k``, ``mv@k`` and ``AP@k`` (arrays of shape (Q,)) over the first k neighbours."""
    nl = neighbour_labels[:, :k]
    rel = (nl == query_labels[:, None]).astype(np.float64)
    hits_so_far = np.cumsum(rel, axis=1)
    precision_at_r = hits_so_far / np.arange(1, nl.shape[1] + 1)
    n_rel = rel.sum(1)
    ap = np.where(n_rel > 0, (precision_at_r * rel).sum(1) / np.maximum(n_rel, 1), 0.0)
    num_classes = int(max(query_labels.max(initial=0), neighbour_labels.max(initial=0))) + 1
    mv = majority_vote(nl, num_classes) == query_labels
    return {"acc": (n_rel > 0).astype(np.float64), "mv": mv.astype(np.float64), "ap": ap}


def rank_weighted_class_scores(neighbour_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """GPFM's rank-weighted class scores: softmax over classes of Σ_r [l_r = c]·(1 − 0.1·(r − 1)).

    Args:
        neighbour_labels: (Q, k) labels of the ranked neighbours.
        num_classes: K.

    Returns:
        (Q, K) probabilities.
    """
    q, k = neighbour_labels.shape
    weights = 1.0 - 0.1 * np.arange(k, dtype=np.float64)
    scores = np.zeros((q, num_classes))
    np.add.at(scores, (np.repeat(np.arange(q), k), neighbour_labels.ravel()), np.tile(weights, q))
    scores -= scores.max(axis=1, keepdims=True)
    expd = np.exp(scores)
    return expd / expd.sum(axis=1, keepdims=True)


def topk_macro_accuracy(labels: np.ndarray, scores: np.ndarray, top: int) -> float:
    """Mean over classes present in ``labels`` of the fraction of its items whose class is in the top ``top``.

    Ties in ``scores`` are broken towards the lower class index (stable sort of −score).
    """
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    hit = (order == labels[:, None]).any(axis=1)
    classes = np.unique(labels)
    return float(np.mean([hit[labels == c].mean() for c in classes]))
