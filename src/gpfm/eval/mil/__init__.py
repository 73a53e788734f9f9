"""MIL aggregators for slide-level tasks, built by name from :data:`AGGREGATORS`.

``abmil`` (non-gated, the ``wsi.abmil.gpfm`` model), ``abmil_gated``, ``transmil``, ``meanpool``, ``maxpool``.
Each maps a bag (N, D) to :class:`MILOutput` (logits (K,), per-instance attention (N,)).
"""

from gpfm.eval.mil import abmil, pooling, transmil  # noqa: F401  (register the aggregators)
from gpfm.eval.mil.abmil import ABMIL
from gpfm.eval.mil.pooling import PoolMIL
from gpfm.eval.mil.registry import AGGREGATORS, MILOutput, create_aggregator
from gpfm.eval.mil.transmil import TransMIL

__all__ = ["ABMIL", "AGGREGATORS", "MILOutput", "PoolMIL", "TransMIL", "create_aggregator"]
