"""Which process does which slide: shard spec from the CLI or the environment, and LPT assignment.

Every shard computes the same longest-processing-time-first (LPT) assignment over the *full* slide list, then
skips what is already done. LPT: sort slides by estimated cost (descending, ties by slide id) and give each to
the currently least-loaded shard (ties to the lowest index); its makespan is at most 4/3 of the optimum.
Correctness never depends on shards agreeing: per-slide locks prevent double work and work stealing picks up
whatever a shard's own list leaves pending, so a cost estimate that changed between shard starts only costs
balance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Rough bytes of compressed slide per 256 px tile at 0.5 µm/px: converts file size into a tile-count estimate
#: so that slides with and without coordinates share one cost unit (JPEG-compressed SVS at 20x: ~25 KB/tile).
BYTES_PER_TILE_ESTIMATE = 25_000


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` of ``count`` (0-based), and where that came from."""

    index: int = 0
    count: int = 1
    source: str = "single"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"invalid shard {self.index}/{self.count}: need 0 <= index < count")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> ShardSpec:
    """Parse ``I/N`` (0-based index ``I`` of ``N`` shards), e.g. ``0/4`` … ``3/4``."""
    try:
        index_s, count_s = text.split("/")
        spec = ShardSpec(int(index_s), int(count_s), "cli")
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 (0-based)") from None
    return spec


def shard_from_env(env: Mapping[str, str] | None = None) -> ShardSpec:
    """The shard implied by torchrun and/or a Slurm job array (single shard when neither is present).

    torchrun sets ``RANK``/``WORLD_SIZE``; a Slurm array sets ``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_MIN``
    and ``SLURM_ARRAY_TASK_COUNT``. Both together (an array of multi-GPU jobs) give
    ``index = array_index * world_size + rank`` of ``array_count * world_size``.
    """
    env = os.environ if env is None else env
    rank, world = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        a_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        a_count = int(env["SLURM_ARRAY_TASK_COUNT"])
        source = "slurm-array+torchrun" if world > 1 else "slurm-array"
        return ShardSpec(a_index * world + rank, a_count * world, source)
    if world > 1:
        return ShardSpec(rank, world, "torchrun")
    return ShardSpec()


def local_device_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``cuda:<LOCAL_RANK>`` under torchrun when CUDA is available, else None (let the caller decide)."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" not in env:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return f"cuda:{int(env['LOCAL_RANK']) % max(1, torch.cuda.device_count())}"


def lpt_assign(costs: Mapping[str, float], num_shards: int) -> list[list[str]]:
    """Longest-processing-time-first assignment of slide ids to ``num_shards`` shards.

    Args:
        costs: slide id → estimated cost (e.g. tile count).
        num_shards: number of shards.

    Returns:
        One list of slide ids per shard, in the order the shard should process them (largest first).
    """
    loads = [0.0] * num_shards
    shards: list[list[str]] = [[] for _ in range(num_shards)]
    for slide_id in sorted(costs, key=lambda s: (-costs[s], s)):
        target = min(range(num_shards), key=lambda i: (loads[i], i))
        shards[target].append(slide_id)
        # a zero-cost slide still takes a moment; count it so that empties spread over the shards
        loads[target] += max(costs[slide_id], 1e-3)
    return shards


def plan_order(
    slide_ids: Sequence[str],
    cost_of: Callable[[str], float],
    shard: ShardSpec,
    steal: bool = True,
) -> tuple[list[str], list[str]]:
    """This shard's own slides and, when ``steal``, the other shards' slides to try afterwards.

    Stolen candidates are ordered by the other shards' lists interleaved from their *ends* (the slides their
    owners would reach last), so a thief rarely races an owner for the same slide.
    """
    costs = {s: float(cost_of(s)) for s in slide_ids}
    shards = lpt_assign(costs, shard.count)
    own = shards[shard.index]
    if not steal:
        return own, []
    others = [list(reversed(s)) for i, s in enumerate(shards) if i != shard.index]
    stolen: list[str] = []
    for depth in range(max((len(o) for o in others), default=0)):
        stolen.extend(o[depth] for o in others if depth < len(o))
    return own, stolen
