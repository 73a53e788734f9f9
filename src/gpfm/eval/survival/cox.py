r"""Cox partial-likelihood loss with Breslow's handling of tied event times.

For risk scores ``r`` (log hazard ratios), times ``t`` and event indicators ``e`` over a batch of n cases:

.. math::
    L = -\frac{1}{\sum_i e_i} \sum_{i: e_i = 1} \Big[ r_i - \log \sum_{j: t_j \ge t_i} \exp(r_j) \Big]

Breslow's approximation keeps every case tied at ``t_i`` in the risk set of each event at ``t_i`` (the
``t_j ≥ t_i`` above). The loss needs several cases per batch (a batch with no event contributes 0).
"""

from __future__ import annotations

import torch
from torch import Tensor


def cox_ph_loss(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Negative Breslow partial log-likelihood, averaged over the events of the batch.

    Args:
        risk: (n,) predicted log hazard ratios.
        time: (n,) event or censoring times.
        event: (n,) 1 = event observed, 0 = censored.

    Returns:
        Scalar loss; exactly 0 (with a gradient path) when the batch has no event.
    """
    risk = risk.reshape(-1)
    time = time.reshape(-1).to(risk.device)
    event = event.reshape(-1).to(risk.device, risk.dtype)
    order = torch.argsort(time, descending=True)
    r_sorted, t_sorted, e_sorted = risk[order], time[order], event[order]
    log_cumsum = torch.logcumsumexp(r_sorted, dim=0)
    # Breslow: the risk set of a case reaches the last case tied with it in the descending order.
    ascending = torch.flip(t_sorted, dims=[0])
    n = t_sorted.numel()
    last_tied = n - torch.searchsorted(ascending.contiguous(), t_sorted.contiguous(), right=False) - 1
    log_risk_set = log_cumsum[last_tied]
    n_events = e_sorted.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    return -((r_sorted - log_risk_set) * e_sorted).sum() / n_events
