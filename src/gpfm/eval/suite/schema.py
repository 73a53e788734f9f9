"""Benchmark suites: a YAML list of tasks, parsed into typed, validated dataclasses.

A suite file looks like::

    name: lc25000-demo
    description: three-class lung ROI classification on the LC25000 sample
    variables:                      # defaults for ${VAR} expansion; the environment overrides them
      GPFM_DATA: ${DATA_ROOT}
    defaults:
      batch_size: 64
      primary_metric: {roi_classification: balanced_accuracy}
      protocol_options: {roi.linear.gpfm: {max_epochs: 200}}
    tasks:
      - id: lc25000-lung
        family: roi_classification
        protocol: [roi.linear.gpfm, roi.knn.dinov2]   # the first one is the headline protocol
        protocol_options: {roi.knn.dinov2: {k: [1, 20]}}
        data: {kind: roi_images, root: ${GPFM_DATA}/patches/lc25000_lung_224, csv: labels.csv}
        primary_metric: balanced_accuracy
        saturated: false

Rules:

* Unknown keys are errors (a typo must never silently fall back to a default). Top-level keys starting with
  ``x-`` are ignored: they hold YAML anchors (``&name``) that tasks reuse (``*name``).
* ``${VAR}`` and ``${VAR:-fallback}`` are expanded in every string of ``data``, ``protocol_options`` and
  ``variables``. Lookup: the built-ins ``DATA_ROOT`` (``--data-root``, else the suite's folder) and
  ``SUITE_DIR`` (reserved: the environment cannot change them), then the environment, then the defaults in the
  suite's ``variables`` block. A leading ``~`` is expanded too.
* Relative paths in ``data`` are resolved by loaders against :attr:`Suite.base_dir` (``--data-root`` when
  given, else the suite file's folder; for the suites shipped with gpfm, the working directory);
  :func:`resolve_data_paths` does it for the path-like keys.
* ``protocol_options`` keys that name one of the task's protocols hold options for that protocol only; other
  keys apply to every protocol of the task. ``defaults.protocol_options`` is keyed by protocol name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpfm.eval.family import family_names
from gpfm.eval.suite.data import (
    DataSpec,
    SuiteError,
    expand_variables,
)

_SUITE_KEYS = {"name", "description", "version", "variables", "defaults", "tasks", "references", "paper",
               "not_reproducible", "cohorts"}
_COHORT_KEYS = {"slides", "features", "recipe", "description"}
_NOT_REPRODUCIBLE_KEYS = {"id", "family", "subgroup", "reason"}
_DEFAULTS_KEYS = {"batch_size", "cache_dir", "primary_metric", "protocol_options"}
_TASK_KEYS = {
    "id",
    "family",
    "protocol",
    "protocol_options",
    "data",
    "primary_metric",
    "metric_direction",
    "saturated",
    "subgroup",
    "description",
    "source",
    "license",
    "obtain",
    "reference",
}
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task: data, protocols and how its number is ranked.

    Attributes:
        id: unique task id (used in result paths and tables).
        family: a registered task family (:func:`gpfm.eval.family.family_names`).
        protocols: protocol names; the first is the headline protocol used for leaderboards.
        protocol_options: protocol name → option overrides (task-level, defaults already merged).
        data: the data block.
        primary_metric: metric override (None = the suite's family default, else the protocol's own).
        metric_direction: ``higher`` or ``lower`` is better, or None to infer from the metric name.
        saturated: near-ceiling task, reported separately and excluded from the headline ranks.
        subgroup: optional sub-family label for breakdowns (e.g. ``internal`` / ``external``).
        description: free text shown in the report.
        source: where the dataset comes from (URL or citation), shown in the report.
        license: dataset licence note.
        obtain: how to get the data in place (download URL and the ``gpfm bench-import`` command), printed by
            ``gpfm bench-check`` next to each missing file.
        reference: published numbers for this task, encoder → value of the headline metric, shown beside ours.
    """

    id: str
    family: str
    protocols: tuple[str, ...]
    protocol_options: dict[str, dict[str, Any]]
    data: DataSpec
    primary_metric: str | None = None
    metric_direction: str | None = None
    saturated: bool = False
    subgroup: str | None = None
    description: str = ""
    source: str = ""
    license: str = ""
    obtain: str = ""
    reference: dict[str, float] = field(default_factory=dict)

    @property
    def headline_protocol(self) -> str:
        """The protocol whose number enters the leaderboard."""
        return self.protocols[0]

    @property
    def group(self) -> str:
        """``family`` or ``family/subgroup`` for per-family breakdowns."""
        return f"{self.family}/{self.subgroup}" if self.subgroup else self.family


@dataclass(frozen=True)
class SuiteDefaults:
    """The ``defaults:`` block.

    Attributes:
        batch_size: embedding batch size passed to loaders.
        cache_dir: feature cache root (None = ``<out_dir>/feature_cache``).
        primary_metric: family → metric used when a task sets none.
        protocol_options: protocol name → option overrides applied to every task using it.
    """

    batch_size: int = 64
    cache_dir: str | None = None
    primary_metric: dict[str, str] = field(default_factory=dict)
    protocol_options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """A parsed suite file.

    Attributes:
        name: suite name.
        path: the YAML file it came from.
        base_dir: folder that relative data paths are resolved against.
        tasks: the tasks, in file order.
        defaults: the defaults block.
        description: free text.
        version: suite version string (recorded with results).
        variables: the resolved ``${VAR}`` table used for expansion (for provenance).
        references: optional free-form reference numbers (e.g. published scores), shown in the report.
        paper: the benchmark this suite reproduces (``name``, ``tasks``: how many tasks it has), so a report
            can say how much of it a run covers.
        not_reproducible: tasks of that benchmark that cannot be run (private cohorts), each with its reason.
        cohorts: slide cohorts ``gpfm bench --extract`` embeds: name → ``slides`` (folder or manifest),
            ``features`` (the ``{encoder}`` folder tasks read, exactly as written in their data blocks) and an
            optional tiling ``recipe`` (default: each encoder's recommended one).
    """

    name: str
    path: Path
    base_dir: Path
    tasks: tuple[TaskSpec, ...]
    defaults: SuiteDefaults = field(default_factory=SuiteDefaults)
    description: str = ""
    version: str = "1"
    variables: dict[str, str] = field(default_factory=dict)
    references: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    not_reproducible: tuple[dict[str, str], ...] = ()
    cohorts: dict[str, dict[str, str]] = field(default_factory=dict)

    def cohorts_for(self, tasks: tuple[TaskSpec, ...] | None = None) -> dict[str, dict[str, str]]:
        """The cohorts whose features folder some of ``tasks`` (default: all) read."""
        used = {str(v) for t in (self.tasks if tasks is None else tasks) for v in t.data.options.values()}
        return {name: c for name, c in self.cohorts.items() if c["features"] in used}

    def task(self, task_id: str) -> TaskSpec:
        """The task with ``task_id`` (raises with the known ids)."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise SuiteError(f"{self.path}: no task {task_id!r}; tasks: {', '.join(t.id for t in self.tasks)}")

    def select(self, task_ids: list[str] | None) -> tuple[TaskSpec, ...]:
        """The tasks named in ``task_ids`` (all when None), validating each name."""
        if not task_ids:
            return self.tasks
        return tuple(self.task(t) for t in task_ids)

    def protocol_names(self) -> list[str]:
        """Every protocol named by any task, sorted."""
        return sorted({p for t in self.tasks for p in t.protocols})

    def data_kinds(self) -> list[str]:
        """Every data loader kind named by any task, sorted."""
        return sorted({t.data.kind for t in self.tasks})

    def unregistered(self) -> dict[str, list[str]]:
        """Protocol names and data kinds this suite uses that are not registered (empty lists = all known)."""
        from gpfm.eval.protocol import PROTOCOLS, TASK_LOADERS

        return {
            "protocols": [p for p in self.protocol_names() if p not in PROTOCOLS],
            "data_kinds": [k for k in self.data_kinds() if k not in TASK_LOADERS],
        }


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SuiteError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return dict(value)


def _check_keys(block: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(block) - allowed)
    if unknown:
        import difflib

        hints = [
            f"{u!r}"
            + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, allowed, 1)) else "")
            for u in unknown
        ]
        raise SuiteError(f"{where}: unknown key(s) {', '.join(hints)}; allowed: {', '.join(sorted(allowed))}")


def _parse_defaults(raw: Any, where: str) -> SuiteDefaults:
    block = _mapping(raw, where)
    _check_keys(block, _DEFAULTS_KEYS, where)
    batch = block.get("batch_size", 64)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise SuiteError(f"{where}.batch_size: expected a positive integer, got {batch!r}")
    pm = _mapping(block.get("primary_metric"), f"{where}.primary_metric")
    bad = sorted(set(pm) - set(family_names()))
    if bad:
        raise SuiteError(f"{where}.primary_metric: unknown famil(ies) {bad}; families: {', '.join(family_names())}")
    popts = _mapping(block.get("protocol_options"), f"{where}.protocol_options")
    popts = {name: _mapping(v, f"{where}.protocol_options.{name}") for name, v in popts.items()}
    cache = block.get("cache_dir")
    return SuiteDefaults(
        batch_size=batch,
        cache_dir=None if cache is None else str(cache),
        primary_metric={k: str(v) for k, v in pm.items()},
        protocol_options=popts,
    )


def _parse_task(
    raw: Any, index: int, defaults: SuiteDefaults, variables: Mapping[str, str], source: str
) -> TaskSpec:
    where = f"{source}: tasks[{index}]"
    block = _mapping(raw, where)
    task_id = block.get("id")
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        raise SuiteError(f"{where}: 'id' must be a string of letters, digits and . _ + - (got {task_id!r})")
    where = f"{where} (id={task_id})"
    _check_keys(block, _TASK_KEYS, where)
    family = block.get("family")
    if family not in family_names():
        raise SuiteError(f"{where}: 'family' must be one of {', '.join(family_names())} (got {family!r})")
    protocols = block.get("protocol")
    if isinstance(protocols, str):
        protocols = [protocols]
    if (
        not protocols
        or not isinstance(protocols, list)
        or not all(isinstance(p, str) and p for p in protocols)
    ):
        raise SuiteError(
            f"{where}: 'protocol' must be a protocol name or a non-empty list of names (got {protocols!r})"
        )
    if len(set(protocols)) != len(protocols):
        raise SuiteError(f"{where}: 'protocol' lists a protocol twice: {protocols}")
    raw_opts = expand_variables(
        _mapping(block.get("protocol_options"), f"{where}.protocol_options"), variables, where
    )
    shared = {k: v for k, v in raw_opts.items() if k not in protocols}
    options: dict[str, dict[str, Any]] = {}
    for name in protocols:
        specific = _mapping(raw_opts.get(name), f"{where}.protocol_options.{name}")
        options[name] = {**defaults.protocol_options.get(name, {}), **shared, **specific}
    data_raw = block.get("data")
    if data_raw is None:
        raise SuiteError(f"{where}: missing 'data' block (e.g. data: {{kind: roi_images, root: ...}})")
    data_block = expand_variables(_mapping(data_raw, f"{where}.data"), variables, f"{where}.data")
    kind = data_block.pop("kind", None)
    if not isinstance(kind, str) or not kind:
        raise SuiteError(
            f"{where}.data: missing 'kind' (the task loader, e.g. roi_images, slide_h5, survival_h5)"
        )
    direction = block.get("metric_direction")
    if direction not in (None, "higher", "lower"):
        raise SuiteError(f"{where}: 'metric_direction' must be 'higher' or 'lower' (got {direction!r})")
    saturated = block.get("saturated", False)
    if not isinstance(saturated, bool):
        raise SuiteError(f"{where}: 'saturated' must be true or false (got {saturated!r})")
    metric = block.get("primary_metric", defaults.primary_metric.get(family))
    return TaskSpec(
        id=task_id,
        family=family,
        protocols=tuple(protocols),
        protocol_options=options,
        data=DataSpec(kind=kind, options=data_block),
        primary_metric=None if metric is None else str(metric),
        metric_direction=direction,
        saturated=saturated,
        subgroup=None if block.get("subgroup") is None else str(block["subgroup"]),
        description=str(block.get("description", "")),
        source=str(block.get("source", "")),
        license=str(block.get("license", "")),
        obtain=str(expand_variables(str(block.get("obtain", "")), variables, f"{where}.obtain")),
        reference=_reference(block.get("reference"), where),
    )


def _reference(raw: Any, where: str) -> dict[str, float]:
    ref = _mapping(raw, f"{where}.reference")
    out = {}
    for model, value in ref.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SuiteError(f"{where}.reference.{model}: must be a number (the published headline metric)")
        out[str(model)] = float(value)
    return out


def _not_reproducible(raw: Any, source: str, task_ids: set[str]) -> tuple[dict[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SuiteError(f"{source}: not_reproducible must be a list of {{id, family, reason}}")
    out = []
    for i, item in enumerate(raw):
        where = f"{source}: not_reproducible[{i}]"
        entry = _mapping(item, where)
        _check_keys(entry, _NOT_REPRODUCIBLE_KEYS, where)
        for key in ("id", "family", "reason"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise SuiteError(f"{where}: missing {key!r}")
        if entry["family"] not in family_names():
            raise SuiteError(f"{where}: 'family' must be one of {', '.join(family_names())}")
        if entry["id"] in task_ids:
            raise SuiteError(f"{where}: {entry['id']!r} is also a runnable task; list it once")
        out.append({k: str(v) for k, v in entry.items()})
    return tuple(out)


def parse_suite(
    raw: Any, path: Path, data_root: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Suite:
    """Validate a loaded YAML mapping and build a :class:`Suite` (see the module docstring for the schema)."""
    source = str(path)
    # top-level "x-..." keys are extension fields that only hold YAML anchors (as in docker compose)
    block = {k: v for k, v in _mapping(raw, source).items() if not str(k).startswith("x-")}
    _check_keys(block, _SUITE_KEYS, source)
    name = block.get("name")
    if not isinstance(name, str) or not name:
        raise SuiteError(f"{source}: missing 'name' (a short suite name)")
    suite_dir = path.resolve().parent
    if data_root is None:
        # a suite shipped inside the package has no data beside it: default to the working directory
        shipped = suite_dir == shipped_suite_path("x").parent.resolve()
        data_root = Path.cwd() if shipped else suite_dir
    base_dir = Path(data_root).expanduser().resolve()
    env = dict(os.environ if environ is None else environ)
    builtins = {"DATA_ROOT": str(base_dir), "SUITE_DIR": str(suite_dir)}
    declared = _mapping(block.get("variables"), f"{source}: variables")
    variables: dict[str, str] = dict(builtins)
    for var, default in declared.items():
        if var in builtins:
            raise SuiteError(
                f"{source}: variables.{var}: {var} is built in (set by --data-root / the suite's folder)"
            )
        # the environment wins over a declared default; defaults may use the built-ins and earlier variables
        variables[var] = (
            env[var]
            if var in env
            else str(expand_variables(str(default), {**env, **variables}, f"{source}: variables.{var}"))
        )
    lookup = {**env, **variables}  # the built-ins are reserved: DATA_ROOT always means base_dir
    defaults = _parse_defaults(block.get("defaults"), f"{source}: defaults")
    tasks_raw = block.get("tasks")
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise SuiteError(f"{source}: 'tasks' must be a non-empty list")
    tasks = tuple(_parse_task(t, i, defaults, lookup, source) for i, t in enumerate(tasks_raw))
    seen: set[str] = set()
    for t in tasks:
        if t.id in seen:
            raise SuiteError(f"{source}: task id {t.id!r} appears twice; ids must be unique")
        seen.add(t.id)
    return Suite(
        name=name,
        path=path,
        base_dir=base_dir,
        tasks=tasks,
        defaults=defaults,
        description=str(block.get("description", "")),
        version=str(block.get("version", "1")),
        variables=variables,
        references=_mapping(block.get("references"), f"{source}: references"),
        paper=_mapping(block.get("paper"), f"{source}: paper"),
        not_reproducible=_not_reproducible(block.get("not_reproducible"), source, seen),
        cohorts=_cohorts(block.get("cohorts"), source, lookup),
    )


def _cohorts(raw: Any, source: str, variables: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out = {}
    for name, entry in _mapping(raw, f"{source}: cohorts").items():
        where = f"{source}: cohorts.{name}"
        entry = _mapping(entry, where)
        _check_keys(entry, _COHORT_KEYS, where)
        for key in ("slides", "features"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise SuiteError(f"{where}: missing {key!r} (slides: folder or manifest; features: the "
                                 "'{encoder}' folder its tasks read)")
        if "{encoder}" not in entry["features"]:
            raise SuiteError(f"{where}.features: must contain {{encoder}} (one folder per encoder)")
        out[str(name)] = {k: str(expand_variables(str(v), variables, where)) for k, v in entry.items()}
    return out


def load_suite(
    path: str | Path, data_root: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Suite:
    """Read and validate a suite YAML file.

    Args:
        path: the suite file, or the name of a shipped suite (``gpfm_public``, ``lc25000_demo``).
        data_root: folder for relative data paths and ``${DATA_ROOT}`` (default: the suite's folder).
        environ: variables for ``${VAR}`` expansion (default: ``os.environ``).

    Raises:
        SuiteError: malformed file (one line naming the file, task and key).
    """
    path = Path(path)
    if not path.exists() and path.suffix == "" and (shipped := shipped_suite_path(path.name)).is_file():
        path = shipped
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found (shipped suites: {', '.join(list_shipped_suites())})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(
            f"{path}: not valid YAML{where}: {problem}; quote values that contain {{ }} : or #"
        ) from None
    return parse_suite(raw, path, data_root=data_root, environ=environ)


def shipped_suite_path(name: str) -> Path:
    """Path of a suite shipped with gpfm (``src/gpfm/eval/suites/<name>.yaml``)."""
    return Path(__file__).parents[1] / "suites" / f"{name}.yaml"


def list_shipped_suites() -> list[str]:
    """Names of the suites shipped with gpfm."""
    return sorted(p.stem for p in (Path(__file__).parents[1] / "suites").glob("*.yaml"))
