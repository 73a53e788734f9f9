"""Task families: the unit of the benchmark, one module each in :mod:`gpfm.eval.families`.

A family module registers its :class:`Family` record, its protocols (:func:`gpfm.eval.protocol.register_protocol`),
its task loaders (:func:`gpfm.eval.protocol.register_task_loader`) and, where it writes new artifact kinds, their
report drawers (:func:`gpfm.eval.report.artifacts.register_drawer`). The registries discover the family modules
on first use, so adding a family is one file in ``gpfm/eval/families/`` plus its tests; the list of families
(``gpfm bench-check``, the suite schema, the per-family leaderboards) is derived from :data:`FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpfm.registry import Registry


@dataclass(frozen=True)
class Family:
    """One task family.

    Attributes:
        name: the ``family:`` value of suite tasks (``roi_classification``, ``survival``...).
        description: one line for listings and the report.
    """

    name: str
    description: str


FAMILIES: Registry[Family] = Registry("task family", discover="gpfm.eval.families")


def register_family(family: Family) -> Family:
    """Add a family record (names must be unique)."""
    FAMILIES.register(family.name, family)
    return family


def family_names() -> list[str]:
    """Every registered family, sorted."""
    return FAMILIES.names()
