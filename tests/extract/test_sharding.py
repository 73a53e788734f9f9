"""Shard specs from CLI/env and the LPT assignment."""

from __future__ import annotations

import itertools

import pytest

from gpfm.extract.sharding import ShardSpec, lpt_assign, parse_shard, plan_order, shard_from_env


def test_parse_shard():
    assert parse_shard("2/4") == ShardSpec(2, 4, "cli")
    for bad in ("4/4", "x/2", "1", "-1/3"):
        with pytest.raises(ValueError, match="expected I/N"):
            parse_shard(bad)


def test_env_specs():
    assert shard_from_env({}) == ShardSpec()
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "2"}) == ShardSpec(1, 2, "torchrun")
    slurm = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert shard_from_env(slurm) == ShardSpec(2, 3, "slurm-array")
    both = {**slurm, "RANK": "1", "WORLD_SIZE": "4"}
    assert shard_from_env(both) == ShardSpec(9, 12, "slurm-array+torchrun")


def test_lpt_matches_hand_computation():
    # sorted: e9 d7 c6 b5 a4 (ties none); shards: e9 | d7 ; c6 -> shard1 (7<9) =13 ; b5 -> shard0 (9) = 14 ;
    # a4 -> shard1 (13) = 17
    shards = lpt_assign({"a": 4, "b": 5, "c": 6, "d": 7, "e": 9}, 2)
    assert shards == [["e", "b"], ["d", "c", "a"]]


def test_lpt_is_near_optimal_and_a_partition():
    costs = {f"s{i:02d}": float((i * 37) % 23 + 1) for i in range(20)}
    n = 3
    shards = lpt_assign(costs, n)
    assert sorted(itertools.chain(*shards)) == sorted(costs)
    makespan = max(sum(costs[s] for s in sh) for sh in shards)
    lower_bound = max(sum(costs.values()) / n, max(costs.values()))
    assert makespan <= 4 / 3 * lower_bound + 1e-9


def test_plan_order_steals_others_from_the_end():
    costs = {"a": 4, "b": 5, "c": 6, "d": 7, "e": 9}
    own, stolen = plan_order(list(costs), costs.__getitem__, ShardSpec(0, 2))
    assert own == ["e", "b"] and stolen == ["a", "c", "d"]
    assert plan_order(list(costs), costs.__getitem__, ShardSpec(0, 2), steal=False)[1] == []
