"""MIL aggregators for slide-level tasks, built by name from :data:`AGGREGATORS`.

``abmil`` (non-gated, the ``wsi.abmil.gpfm`` model), ``abmil_gated``, ``transmil``, ``meanpool``, ``maxpool``
(one file each in ``aggregators/``). Each maps a bag (N, D) to :class:`MILOutput` (logits (K,), per-instance
attention (N,)).
"""

from gpfm.eval.mil.registry import AGGREGATORS, MILOutput, create_aggregator

__all__ = ["AGGREGATORS", "MILOutput", "create_aggregator"]
