"""Linear-probe trainers behind the ``roi.linear.*`` protocols (arrays in, probabilities out)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gpfm.eval.metrics import macro_auroc


@dataclass
class ProbeFit:
    """A trained probe's test probabilities and what was selected on the way."""

    proba: np.ndarray
    info: dict[str, object] = field(default_factory=dict)
    curves: dict[str, list[float]] | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None


@contextlib.contextmanager
def _small_problem_threads(batch_flops: int) -> Iterator[None]:
    """One intra-op thread for tiny per-step matrix products (thread hand-offs cost more than they save)."""
    previous = torch.get_num_threads()
    if batch_flops < (1 << 24):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)


def train_adamw_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    *,
    lr: float = 5e-4,
    min_lr: float = 1e-5,
    weight_decay: float = 1e-5,
    batch_size: int = 256,
    max_epochs: int = 3000,
    patience: int = 100,
    init_std: float = 0.01,
    seed: int = 0,
) -> ProbeFit:
    """GPFM's probe: one Linear layer, AdamW, per-iteration cosine decay, best-val-AUROC checkpoint.

    Loss: mean cross-entropy of ``x W^T + b``. Learning rate at iteration t of T = max_epochs · ⌈N/batch⌉:
    ``min_lr + ½ (lr − min_lr)(1 + cos(π t / T))``. After every epoch the macro one-vs-rest AUROC on val is
    computed; a strictly better value stores the weights; training stops after ``patience`` epochs without
    improvement. Mini-batches are index slices of full in-memory tensors (no DataLoader), shuffled each epoch
    by a seeded generator.
    """
    gen = torch.Generator().manual_seed(seed)
    xt, yt = _tensor(x_train), torch.as_tensor(y_train, dtype=torch.long)
    xv, xs = _tensor(x_val), _tensor(x_test)
    onehot = F.one_hot(yt, num_classes).float()
    weight = torch.empty(num_classes, xt.shape[1]).normal_(0.0, init_std, generator=gen)
    bias = torch.zeros(num_classes)
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    iters = math.ceil(len(xt) / batch_size)
    total = max_epochs * iters
    best_auc, best_epoch = -math.inf, -1
    best = (weight.clone(), bias.clone())
    curves: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_metric": []}
    step = 0
    with _small_problem_threads(batch_size * xt.shape[1] * num_classes), torch.no_grad():
        for epoch in range(max_epochs):
            perm = torch.randperm(len(xt), generator=gen)
            loss_sum = 0.0
            for start in range(0, len(xt), batch_size):
                idx = perm[start : start + batch_size]
                for group in opt.param_groups:
                    group["lr"] = min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * step / total))
                xb = xt[idx]
                log_p = torch.log_softmax(torch.addmm(bias, xb, weight.T), dim=1)
                loss_sum -= float((log_p * onehot[idx]).sum())
                # closed-form gradient of the mean cross-entropy: (softmax − onehot)/B, no autograd graph
                g = (log_p.exp_() - onehot[idx]) / len(idx)
                torch.mm(g.T, xb, out=weight.grad)
                torch.sum(g, dim=0, out=bias.grad)
                opt.step()
                step += 1
            val_proba = torch.softmax(torch.addmm(bias, xv, weight.T), dim=1).numpy()
            auc = float(macro_auroc(y_val, val_proba))
            curves["epoch"].append(epoch + 1)
            curves["train_loss"].append(loss_sum / len(xt))
            curves["val_metric"].append(auc)
            if auc > best_auc:
                best_auc, best_epoch, best = auc, epoch + 1, (weight.clone(), bias.clone())
            elif epoch + 1 - best_epoch >= patience:
                break
        proba = torch.softmax(torch.addmm(best[1], xs, best[0].T), dim=1).numpy()
    info = {
        "selected_epoch": best_epoch,
        "epochs_run": len(curves["epoch"]),
        "best_val_macro_auroc": best_auc,
        "seed": seed,
    }
    return ProbeFit(proba.astype(np.float64), info, curves, best[0].numpy(), best[1].numpy())


def train_lbfgs_logreg(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    *,
    max_iter: int = 1000,
    C: float | None = None,
) -> ProbeFit:
    """UNI's multinomial logistic regression fitted by one torch L-BFGS ``step`` (strong-Wolfe line search).

    Loss = mean cross-entropy + (1/C) · ½ · ‖W‖_F, the **unsquared** Frobenius norm of the weights (the bias
    is not penalised), with C = d·K/100 by default (d = feature dim, K = classes). Parameters start at 0.
    """
    xt, yt, xs = _tensor(x_train), torch.as_tensor(y_train, dtype=torch.long), _tensor(x_test)
    c_value = float(C) if C is not None else xt.shape[1] * num_classes / 100.0
    probe = nn.Linear(xt.shape[1], num_classes)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(probe(xt), yt) + (1.0 / c_value) * 0.5 * torch.linalg.norm(probe.weight)
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[opt._params[0]]
    with torch.no_grad():
        final_loss = float(F.cross_entropy(probe(xt), yt) + (0.5 / c_value) * torch.linalg.norm(probe.weight))
        proba = torch.softmax(probe(xs), dim=1).numpy()
    info = {"C": c_value, "lbfgs_iterations": int(state.get("n_iter", 0)), "final_loss": final_loss}
    return ProbeFit(
        proba.astype(np.float64),
        info,
        None,
        probe.weight.detach().numpy().copy(),
        probe.bias.detach().numpy().copy(),
    )


def sklearn_c_grid() -> np.ndarray:
    """The ``auto`` sweep: 45 log-spaced C values over 1e-5 … 1e6."""
    return np.logspace(-5, 6, 45)


def train_sklearn_logreg(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    x_test: np.ndarray,
    num_classes: int,
    *,
    c_mode: str = "fixed",
    C: float = 0.5,
    class_weight: str | None = "balanced",
    max_iter: int = 10000,
    seed: int = 0,
) -> ProbeFit:
    """scikit-learn ``LogisticRegression`` (lbfgs) with C fixed, by the d·K/100 heuristic, or swept on val.

    ``auto`` fits one model per C of :func:`sklearn_c_grid` on train and keeps the one with the best val
    balanced accuracy (the smaller C on ties); test is only scored by the kept model.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    def fit(c: float) -> LogisticRegression:
        model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed, class_weight=class_weight)
        return model.fit(x_train, y_train)

    def full_proba(model: LogisticRegression, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), num_classes))
        out[:, model.classes_] = model.predict_proba(x)  # classes absent from train keep probability 0
        return out

    info: dict[str, object] = {"c_mode": c_mode}
    if c_mode == "fixed":
        model = fit(C)
    elif c_mode == "adaptive":
        model = fit(x_train.shape[1] * num_classes / 100.0)
    elif c_mode == "auto":
        if x_val is None or y_val is None or not len(x_val):
            raise ValueError("roi.linear.sk c_mode=auto selects C on val; the task needs a val split")
        best, model, scores = -math.inf, None, []
        for c in sklearn_c_grid():
            candidate = fit(float(c))
            score = balanced_accuracy_score(y_val, full_proba(candidate, x_val).argmax(1))
            scores.append(float(score))
            if score > best:
                best, model = score, candidate
        info["val_balanced_accuracy_by_C"] = scores
    else:
        raise ValueError(f"roi.linear.sk: unknown c_mode {c_mode!r}; use fixed, adaptive or auto")
    info["C"] = float(model.C)
    info["iterations"] = int(np.max(model.n_iter_))
    return ProbeFit(full_proba(model, x_test), info)
