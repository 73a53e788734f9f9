"""The MIL aggregator registry and the output record every aggregator returns.

Every aggregator maps one bag of instance features ``x`` (N, D) to ``MILOutput(logits (K,), attention (N,))``
and is built by name: ``create_aggregator("abmil", in_dim=1024, n_outputs=2)``. ``K`` is the number of
classes for classification or of hazard bins (or 1 for a Cox risk) for survival. ``attention`` is a
per-instance relevance score row-aligned with the bag (softmax attention for ABMIL, an instance saliency
for the pooling baselines, class-token attention for TransMIL), saved for heatmaps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from gpfm.registry import Registry


@dataclass
class MILOutput:
    """What an aggregator returns for one bag.

    Attributes:
        logits: (K,) bag-level outputs.
        attention: (N,) per-instance scores (row-aligned with the bag), or None.
    """

    logits: Tensor
    attention: Tensor | None = None


AGGREGATORS: Registry[Callable[..., nn.Module]] = Registry("MIL aggregator", discover="gpfm.eval.mil.aggregators")


def create_aggregator(name: str, *, in_dim: int, n_outputs: int, **kwargs: Any) -> nn.Module:
    """Build a registered aggregator (``abmil``, ``abmil_gated``, ``transmil``, ``meanpool``, ``maxpool``).

    Args:
        name: registry name.
        in_dim: instance feature size D.
        n_outputs: bag outputs K.
        **kwargs: architecture options of that aggregator (unknown ones raise ``TypeError``).
    """
    return AGGREGATORS.get(name)(in_dim=in_dim, n_outputs=n_outputs, **kwargs)
