"""MIL aggregators: registry, shapes, attention, Nyström exactness; the training loop's stopping rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpfm.eval.mil import AGGREGATORS, create_aggregator
from gpfm.eval.mil.aggregators.transmil import NystromAttention, _pinv
from gpfm.eval.training import Objective, TrainConfig, fit, seed_everything
from gpfm.registry import UnknownNameError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a shared, busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", AGGREGATORS.names())
@pytest.mark.parametrize("n", [1, 5, 70])
def test_every_aggregator_maps_a_bag_to_logits_and_attention(name: str, n: int) -> None:
    torch.manual_seed(0)
    opts = {"dim": 32, "heads": 2, "landmarks": 16} if name == "transmil" else {"hidden": 32}
    model = create_aggregator(name, in_dim=12, n_outputs=3, **opts).eval()
    out = model(torch.randn(n, 12))
    assert out.logits.shape == (3,) and out.attention.shape == (n,)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.attention).all()
    again = model(torch.randn(n, 12)[None])  # a leading batch dimension of 1 is accepted
    assert again.logits.shape == (3,)


def test_registry_lists_names_on_unknown() -> None:
    with pytest.raises(UnknownNameError, match="abmil"):
        create_aggregator("clam", in_dim=4, n_outputs=2)


def test_abmil_attention_is_softmax_and_pooling_is_weighted_sum() -> None:
    torch.manual_seed(0)
    for gated in ("abmil", "abmil_gated"):
        model = create_aggregator(gated, in_dim=6, n_outputs=2).eval()
        x = torch.randn(9, 6)
        out = model(x)
        h = model.trunk(x)
        a = torch.softmax(model.attention_logits(h), 0)
        torch.testing.assert_close(out.attention, a)
        torch.testing.assert_close(out.logits, model.head((a[:, None] * h).sum(0)))
        assert out.attention.sum().item() == pytest.approx(1.0, abs=1e-6)
        perm = torch.randperm(9)
        torch.testing.assert_close(model(x[perm]).logits, out.logits)  # permutation invariant


def test_pooling_baselines_are_mean_and_max() -> None:
    torch.manual_seed(0)
    x = torch.randn(7, 5)
    mean = create_aggregator("meanpool", in_dim=5, n_outputs=2, hidden=0).eval()
    torch.testing.assert_close(mean(x).logits, mean.head(x.mean(0)))
    mx = create_aggregator("maxpool", in_dim=5, n_outputs=2, hidden=0).eval()
    torch.testing.assert_close(mx(x).logits, mx.head(x.max(0).values))
    assert mx(x).attention.sum().item() == pytest.approx(1.0)


def test_pinv_iteration_converges_to_the_pseudo_inverse() -> None:
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(2, 16, 16, dtype=torch.float64), -1)
    torch.testing.assert_close(_pinv(a, 30), torch.linalg.pinv(a), atol=1e-6, rtol=1e-5)


def test_nystrom_is_exact_attention_when_landmarks_equal_the_tokens() -> None:
    """Tokens repeated in whole segments make the landmarks exact: Nyström = softmax attention."""
    torch.manual_seed(0)
    attn = NystromAttention(dim=16, heads=2, dim_head=8, landmarks=8, pinv_iterations=30).double().eval()
    distinct = torch.randn(1, 8, 16, dtype=torch.float64)
    x = distinct.repeat_interleave(4, dim=1)  # n = 32 = 8 landmarks × 4, no padding
    with torch.no_grad():
        approx = attn(x)
        exact = attn._exact(x, None)
    torch.testing.assert_close(approx, exact, atol=1e-6, rtol=1e-5)


def _toy(n: int = 40, seed: int = 0) -> tuple[list[torch.Tensor], np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    labels = np.arange(n) % 2
    bags = [torch.randn(6, 4, generator=g) + float(y) for y in labels]
    return bags, labels


def _ce_objective(labels: np.ndarray, scores: list[float] | None = None) -> Objective:
    y = torch.as_tensor(labels)
    calls = iter(scores or [])

    def loss(out: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(out, y[rows])

    def score(out: torch.Tensor, rows: np.ndarray) -> tuple[float, float]:
        if scores is not None:
            return next(calls), 0.0
        return float((out.argmax(1) != y[rows]).float().mean()), float(loss(out, rows))

    return Objective(loss, score, labels)


def test_early_stopping_patience_min_epochs_and_best_restore() -> None:
    bags, labels = _toy()
    rows = np.arange(40)
    # improves until epoch 2, then stalls: stop once patience (3) is used up *and* epoch > min_epochs (6)
    scores = [0.5, 0.4, 0.3] + [0.35] * 20
    seed_everything(0)
    model = create_aggregator("abmil", in_dim=4, n_outputs=2, hidden=8, attn_dim=4)
    snapshots = {}
    original_score = _ce_objective(labels, scores).score

    def recording(out: torch.Tensor, r: np.ndarray) -> tuple[float, float]:
        snapshots[len(snapshots)] = {k: v.clone() for k, v in model.state_dict().items()}
        return original_score(out, r)

    obj = _ce_objective(labels, scores)
    obj.score = recording
    cfg = TrainConfig(max_epochs=30, patience=3, min_epochs=6, lr=1e-2, num_threads=1)
    res = fit(model, bags, rows[:30], rows[30:], obj, cfg)
    assert res.best_epoch == 2 and res.epochs_run == 8  # epochs 3..7 stall; 7 > 6 and counter 5 >= 3
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[2][k])  # the best checkpoint is restored
    assert res.curves["val_metric"][:3] == [0.5, 0.4, 0.3]


def test_fit_is_seeded_and_learns() -> None:
    bags, labels = _toy()
    rows = np.arange(40)
    results = []
    for _ in range(2):
        seed_everything(5)
        model = create_aggregator("abmil", in_dim=4, n_outputs=2, hidden=8, attn_dim=4)
        cfg = TrainConfig(max_epochs=15, patience=50, min_epochs=0, lr=1e-2, num_threads=1, seed=5)
        res = fit(model, bags, rows[:30], rows[30:], _ce_objective(labels), cfg)
        results.append((res.curves["train_loss"], [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))
    assert results[0][0][-1] < results[0][0][0]


def test_balanced_sampling_draws_classes_equally() -> None:
    from gpfm.eval.training import _epoch_order

    strata = np.array([0] * 90 + [1] * 10)
    gen = torch.Generator().manual_seed(0)
    draws = np.concatenate([_epoch_order(100, strata, gen) for _ in range(50)])
    share = (strata[draws] == 1).mean()
    assert abs(share - 0.5) < 0.03  # vs 0.1 without balancing
    plain = _epoch_order(100, None, gen)
    assert sorted(plain.tolist()) == list(range(100))


def test_mil_protocol_folds_times_seeds(tmp_path) -> None:
    import csv

    import h5py

    from gpfm.eval.data.bags import BagDataset
    from gpfm.eval.protocol import create_protocol

    g = torch.Generator().manual_seed(0)
    labels = np.arange(60) % 3
    bags = [torch.randn(int(5 + i % 7), 6, generator=g) + 2.0 * float(y) for i, y in enumerate(labels)]
    cases = [f"case{i // 2}" for i in range(60)]  # two slides per case: folds must keep them together
    data = BagDataset(bags, labels, [f"s{i}" for i in range(60)], label_names=["a", "b", "c"], cases=cases)
    proto = create_protocol(
        "wsi.meanpool", seeds=(3, 4), n_folds=3, max_epochs=4, min_epochs=0, patience=9, num_threads=1
    )
    result = proto.run(data, tmp_path, task="toy", encoder="e")
    assert len(result.runs) == 6 and {r["seed"] for r in result.runs} == {3, 4}
    assert result.metrics["macro_auroc"] == pytest.approx(np.mean([r["macro_auroc"] for r in result.runs]))
    assert result.metrics_sd["macro_auroc"] == pytest.approx(
        np.std([r["macro_auroc"] for r in result.runs], ddof=1)
    )
    assert "macro_auroc" in result.ci95 and result.provenance["split_hash"]
    with open(tmp_path / result.artifacts["predictions"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 120 and sorted({r["id"] for r in rows}) == sorted(data.ids)
    for seed in ("3", "4"):
        per_case_folds = {}
        for r in rows:
            if r["seed"] == seed:
                per_case_folds.setdefault(cases[int(r["id"][1:])], set()).add(r["fold"])
        assert all(len(f) == 1 for f in per_case_folds.values())  # a case is tested in one fold only
    with h5py.File(tmp_path / result.artifacts["attention"], "r") as fh:
        assert len(fh) == 60  # every test bag of the first seed


def test_max_tiles_train_subsamples_training_bags_only() -> None:
    bags, labels = _toy()
    seen: dict[str, list[int]] = {"train": [], "eval": []}
    inner = create_aggregator("abmil", in_dim=4, n_outputs=2, hidden=8, attn_dim=4)

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor):
            seen["train" if self.training else "eval"].append(x.shape[0])
            return self.inner(x)

    cfg = TrainConfig(max_epochs=2, patience=5, min_epochs=0, max_tiles_train=2, num_threads=1)
    fit(Recorder(), bags, np.arange(30), np.arange(30, 40), _ce_objective(labels), cfg)
    assert set(seen["train"]) == {2} and set(seen["eval"]) == {6}  # validation always sees whole bags
