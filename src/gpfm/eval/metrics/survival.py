r"""Harrell's concordance index with exactly the semantics of ``sksurv.metrics.concordance_index_censored``.

Definition (benchmark-protocols.md §4; scikit-survival 0.2x, ``tied_tol=1e-8``). With event indicator
``e`` (1 = event observed, i.e. ``1 - censorship``), time ``t`` and predicted risk ``r``:

* a pair (i, j) is **comparable** when ``e_i = 1`` and either ``t_j > t_i``, or ``t_j = t_i`` and ``e_j = 0``
  (an event is earlier than a censoring at the same time; two events at the same time are not comparable);
* it is **concordant** when ``r_i > r_j`` (the earlier event has the higher risk) and the risks are not tied;
* it is **tied in risk** when ``|r_i - r_j| <= tied_tol``; a tied pair counts 0.5;

.. math:: C = \frac{\#\text{concordant} + 0.5\,\#\text{tied risk}}{\#\text{comparable}}

The pair count is computed vectorised in row blocks (O(n²) work, O(block · n) memory), which is exact and
fast for cohorts up to ~10⁵ cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Concordance:
    """Harrell's c-index and its pair counts (the tuple ``concordance_index_censored`` returns).

    Attributes:
        cindex: the concordance index in [0, 1].
        concordant: comparable pairs ordered correctly and not tied in risk.
        discordant: comparable pairs ordered wrongly and not tied in risk.
        tied_risk: comparable pairs whose risks differ by at most ``tied_tol``.
        tied_time: pairs of an event and a censoring at the same time (they are comparable).
    """

    cindex: float
    concordant: int
    discordant: int
    tied_risk: int
    tied_time: int

    def as_tuple(self) -> tuple[float, int, int, int, int]:
        """``(cindex, concordant, discordant, tied_risk, tied_time)`` as scikit-survival returns it."""
        return (self.cindex, self.concordant, self.discordant, self.tied_risk, self.tied_time)


def _validate(
    event: ArrayLike, time: ArrayLike, risk: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = np.asarray(event)
    t = np.asarray(time, dtype=np.float64)
    r = np.asarray(risk, dtype=np.float64)
    if e.ndim != 1 or t.shape != e.shape or r.shape != e.shape:
        raise ValueError(
            "c-index: event, time and risk must be 1-D arrays of one length; "
            f"got {e.shape}, {t.shape}, {r.shape}"
        )
    if e.dtype != bool:
        if not np.isin(e, (0, 1)).all():
            raise ValueError("c-index: event must be boolean or 0/1 (1 = event observed = 1 - censorship)")
        e = e.astype(bool)
    if not np.isfinite(t).all() or not np.isfinite(r).all():
        raise ValueError("c-index: time and risk must be finite (found NaN or inf)")
    if not e.any():
        raise ValueError("c-index: all cases are censored; at least one event is needed")
    return e, t, r


def concordance(
    event: ArrayLike, time: ArrayLike, risk: ArrayLike, *, tied_tol: float = 1e-8, block: int = 2048
) -> Concordance:
    """Harrell's concordance of ``risk`` with observed survival (higher risk = earlier event).

    Args:
        event: (n,) bool or 0/1, 1 when the event was observed (``1 - censorship``).
        time: (n,) event or censoring times.
        risk: (n,) predicted risk scores.
        tied_tol: risks closer than this count as tied (0.5).
        block: rows of the pair matrix processed at once (memory ``block × n``).

    Returns:
        :class:`Concordance` with the c-index and pair counts, equal to scikit-survival's.

    Raises:
        ValueError: on malformed input, no events, or no comparable pairs.
    """
    e, t, r = _validate(event, time, risk)
    idx = np.flatnonzero(e)  # only events can be the earlier member of a comparable pair
    censored = ~e
    concordant = discordant = tied_risk = tied_time = 0
    for start in range(0, idx.size, block):
        rows = idx[start : start + block]
        ti = t[rows, None]
        later = t[None, :] > ti
        same_time_censored = (t[None, :] == ti) & censored[None, :]
        comparable = later | same_time_censored
        diff = r[rows, None] - r[None, :]
        ties = comparable & (np.abs(diff) <= tied_tol)
        conc = comparable & (diff > 0) & ~ties
        n_comp = int(comparable.sum())
        n_ties = int(ties.sum())
        n_conc = int(conc.sum())
        concordant += n_conc
        tied_risk += n_ties
        discordant += n_comp - n_conc - n_ties
        tied_time += int(same_time_censored.sum())
    total = concordant + discordant + tied_risk
    if total == 0:
        raise ValueError("c-index: no comparable pairs (every event is at the last time or all times tie)")
    return Concordance((concordant + 0.5 * tied_risk) / total, concordant, discordant, tied_risk, tied_time)


def concordance_index(event: ArrayLike, time: ArrayLike, risk: ArrayLike, *, tied_tol: float = 1e-8) -> float:
    """Harrell's c-index (see :func:`concordance`); the survival protocols' primary metric."""
    return concordance(event, time, risk, tied_tol=tied_tol).cindex
