"""SimpleShot few-shot classification maths (the ``roi.fewshot.simpleshot`` protocol is in the ROI family).

Per episode and shot count n: draw n train items per class (without replacement) as support; centre support
and queries on the **support mean** μ and L2-normalise ("CL2N"); prototypes p_c are the class means of the
normalised support; every test item is assigned to the nearest prototype in Euclidean distance. The query set
is the whole test split and all classes are used. Episodes are vectorised: with x̂ = (x − μ)/‖x − μ‖,
‖x̂ − p_c‖² = 1 + ‖p_c‖² − 2 (x·p_c − μ·p_c)/‖x − μ‖, and ‖x − μ‖² = ‖x‖² − 2 x·μ + ‖μ‖², so one matrix
product per batch of episodes scores everything without materialising centred copies of the queries.

Reported per shot count: mean, sd and the 2.5/97.5 percentiles over episodes of balanced accuracy and macro F1
(``balanced_accuracy@{n}shot``...). The headline ``balanced_accuracy`` / ``macro_f1`` are those at
``primary_shots`` (or the largest shot count every class can supply, which is then flagged).
"""

from __future__ import annotations

import numpy as np
import torch


def sample_supports(
    class_members: list[np.ndarray], shots: int, episodes: int, rng: np.random.Generator
) -> np.ndarray:
    """(E, K, n) train indices: n distinct members of each class per episode."""
    out = np.empty((episodes, len(class_members), shots), dtype=np.int64)
    for c, members in enumerate(class_members):
        keys = rng.random((episodes, len(members)))
        out[:, c, :] = members[np.argpartition(keys, shots - 1, axis=1)[:, :shots]]
    return out


def _prototypes_dense(
    xt: torch.Tensor, t_sq: torch.Tensor, sup: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Support means and prototypes through a dense (e, K, N) selection matrix (small train sets).

    With selection A_e, s_ei = ‖x_i − μ_e‖: μ_e = Σ_c A_e[c] X / (K n) and
    p_ec = (A_e[c]/s_e) X / n − μ_e · Σ_i A_e[c, i]/(n s_ei): matrix products, no gathered copies.
    """
    e, k, _ = sup.shape
    select = torch.zeros(e, k, len(xt), dtype=xt.dtype)
    select.scatter_(2, sup, 1.0)
    mu = select.sum(1) @ xt / (k * n)
    dist_to_mu = (t_sq[None, :] - 2.0 * mu @ xt.T + (mu * mu).sum(1)[:, None]).clamp_min(1e-24).sqrt()
    weights = select / (n * dist_to_mu[:, None, :])
    return mu, weights @ xt - weights.sum(-1, keepdim=True) * mu[:, None, :]


def _prototypes_gather(xt: torch.Tensor, sup: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Support means and prototypes from the gathered (e, K, n, D) support features (large train sets)."""
    feats = xt[sup]
    mu = feats.mean(dim=(1, 2))
    centred = feats - mu[:, None, None, :]
    return mu, (centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)).mean(dim=2)


def simpleshot_predictions(
    x_train: np.ndarray,
    supports: np.ndarray,
    x_query: np.ndarray,
    max_elements: int = 1 << 23,
    method: str = "auto",
) -> np.ndarray:
    """Nearest-prototype predictions (E, Q) for every episode's support set, episodes batched.

    Prototypes come from a dense selection-matrix product when the train set is small relative to the
    support (n shots ≥ N/4) and from gathered support features otherwise (cost ∝ n instead of N). Queries are
    never centred explicitly: with x̂ = (x − μ)/‖x − μ‖, ‖x̂ − p‖² = 1 + ‖p‖² − 2 (x·p − μ·p)/‖x − μ‖ and
    ‖x − μ‖² = ‖x‖² − 2 x·μ + ‖μ‖².
    """
    xt = torch.as_tensor(x_train, dtype=torch.float64)
    xq = torch.as_tensor(x_query, dtype=torch.float64)
    t_sq, q_sq = (xt * xt).sum(1), (xq * xq).sum(1)
    e_total, k, n = supports.shape
    if method not in ("auto", "dense", "gather"):
        raise ValueError(f"unknown prototype method {method!r}; use auto, dense or gather")
    dense = method == "dense" or (method == "auto" and 4 * n >= len(xt))
    per_episode = k * len(xt) if dense else k * n * xt.shape[1]
    episode_batch = max(1, max_elements // max(1, per_episode, k * len(xq)))
    preds = np.empty((e_total, len(x_query)), dtype=np.int64)
    for start in range(0, e_total, episode_batch):
        sup = torch.as_tensor(supports[start : start + episode_batch])
        mu, protos = _prototypes_dense(xt, t_sq, sup, n) if dense else _prototypes_gather(xt, sup)
        x_dot_p = torch.einsum("qd,ekd->eqk", xq, protos)
        mu_dot_p = torch.einsum("ed,ekd->ek", mu, protos)
        q_norm = (q_sq[None, :] - 2.0 * mu @ xq.T + (mu * mu).sum(1)[:, None]).clamp_min(1e-24).sqrt()
        # the constant 1 of ‖x̂ − p‖² does not change the arg-min
        dist = (protos * protos).sum(-1)[:, None, :] - 2.0 * (x_dot_p - mu_dot_p[:, None, :]) / q_norm[
            ..., None
        ]
        preds[start : start + len(sup)] = dist.argmin(dim=-1).numpy()
    return preds


def episode_confusions(y_true: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(E, K, K) confusion counts (rows = truth) of (E, Q) per-episode predictions, by one bincount."""
    e = preds.shape[0]
    flat = (np.arange(e)[:, None] * num_classes + y_true[None, :]) * num_classes + preds
    return np.bincount(flat.ravel(), minlength=e * num_classes * num_classes).reshape(
        e, num_classes, num_classes
    )


def episode_summary(values: np.ndarray) -> dict[str, float]:
    """Mean, sd and the 2.5/97.5 percentiles of a metric over episodes."""
    low, high = np.percentile(values, [2.5, 97.5])
    return {
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "p2.5": float(low),
        "p97.5": float(high),
    }
