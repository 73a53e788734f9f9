"""Check a suite before running it: names registered, options accepted, data present (per encoder).

Nothing is loaded or embedded; this is what ``gpfm bench-check`` prints so that users can see which datasets
of a suite such as ``gpfm_public`` they still have to put in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpfm.eval.suite import load_suite, missing_data_paths, resolve_data_paths


@dataclass
class TaskCheck:
    """The readiness of one task.

    Attributes:
        task: task id.
        family: task family.
        protocols: protocol names (headline first).
        data_kind: the task loader name.
        errors: configuration errors (unknown protocol or loader, rejected option): the suite must be fixed.
        missing: encoder (or ``*`` when no encoder is given) → data paths that do not exist.
        obtain: how to get the data in place (the task's ``obtain``), shown next to missing files.
    """

    task: str
    family: str
    protocols: list[str]
    data_kind: str
    errors: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    obtain: str = ""

    @property
    def ready(self) -> bool:
        """No configuration error and all data present."""
        return not self.errors and not any(self.missing.values())


def check_suite(
    suite_path: str | Path, encoders: Sequence[str] | None = None, data_root: str | Path | None = None
) -> list[TaskCheck]:
    """Validate every task of a suite without running anything.

    Args:
        suite_path: suite YAML or shipped suite name.
        encoders: encoders whose per-encoder data (``{encoder}`` paths) to check; None checks only the
            encoder-independent paths.
        data_root: as for :func:`gpfm.eval.run.runner.run_suite`.

    Raises:
        SuiteError: the file itself is malformed.
    """
    from gpfm.eval.protocol import PROTOCOLS, TASK_LOADERS, create_protocol

    suite = load_suite(suite_path, data_root=data_root)
    checks = []
    for task in suite.tasks:
        check = TaskCheck(task.id, task.family, list(task.protocols), task.data.kind, obtain=task.obtain)
        if task.data.kind not in TASK_LOADERS:
            check.errors.append(f"unknown data kind {task.data.kind!r} (known: {', '.join(TASK_LOADERS)})")
        for name in task.protocols:
            if name not in PROTOCOLS:
                check.errors.append(f"unknown protocol {name!r}")
                continue
            try:
                proto = create_protocol(name, **task.protocol_options.get(name, {}))
            except Exception as err:  # the option error message names the protocol and the known options
                check.errors.append(str(err).splitlines()[0])
                continue
            if proto.family != task.family:
                check.errors.append(
                    f"protocol {name} is for family {proto.family}, the task is {task.family}"
                )
        block = resolve_data_paths(task.data, suite.base_dir)
        for enc in encoders or [None]:
            check.missing[enc or "*"] = missing_data_paths(block, encoder=enc)
        checks.append(check)
    return checks
