"""Encoder weight resolution: the shared resolver of :mod:`gpfm.weights`, re-exported for encoder code."""

from gpfm.weights import RANDOM, ResolvedWeights, WeightsNotFoundError, resolve_weights, weights_dir

__all__ = ["RANDOM", "ResolvedWeights", "WeightsNotFoundError", "resolve_weights", "weights_dir"]
