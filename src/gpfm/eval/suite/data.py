"""Variables and data paths of suite files: ``${VAR}`` expansion, path-like keys, existence checks."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpfm.errors import GpfmError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Keys of a data block whose values are file-system locations (used to resolve and check them).
_PATH_KEYS = {
    "root",
    "path",
    "dir",
    "file",
    "csv",
    "json",
    "h5",
    "h5_dir",
    "features",
    "images",
    "table",
    "split",
    "splits",
    "labels",
}
_PATH_SUFFIXES = ("_path", "_dir", "_file", "_csv", "_json", "_root", "_h5", "_table", "_split", "_splits")


@dataclass(frozen=True)
class DataSpec:
    """The ``data:`` block of a task.

    Attributes:
        kind: the task loader name (a key of :data:`gpfm.eval.protocol.TASK_LOADERS`).
        options: every other key, after ``${VAR}`` expansion (paths may still be relative).
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def as_block(self) -> dict[str, Any]:
        """The block as a loader receives it (``kind`` included)."""
        return {"kind": self.kind, **self.options}



class SuiteError(GpfmError, ValueError):
    """A suite file is malformed; the message names the file, the task and the offending key or value."""


def expand_variables(value: Any, variables: Mapping[str, str], where: str) -> Any:
    """Expand ``${VAR}``/``${VAR:-fallback}`` and a leading ``~`` in every string inside ``value``.

    Raises:
        SuiteError: a variable is undefined and has no fallback.
    """
    if isinstance(value, str):

        def _sub(match: re.Match[str]) -> str:
            name, fallback = match.group(1), match.group(2)
            if name in variables:
                return str(variables[name])
            if fallback is not None:
                return fallback
            raise SuiteError(
                f"{where}: undefined variable ${{{name}}}; set the environment variable {name}, add it to "
                f"the suite's 'variables:' block, or write ${{{name}:-fallback}}"
            )

        out = _VAR.sub(_sub, value)
        return os.path.expanduser(out) if out.startswith("~") else out
    if isinstance(value, list):
        return [expand_variables(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: expand_variables(v, variables, where) for k, v in value.items()}
    return value


def is_path_key(key: str) -> bool:
    """Whether a data-block key names a file-system location (``root``, ``csv``, ``*_dir``, ...)."""
    return key in _PATH_KEYS or key.endswith(_PATH_SUFFIXES)


def resolve_data_paths(data: DataSpec, base_dir: Path) -> dict[str, Any]:
    """The data block with its path-like string values made absolute against ``base_dir``.

    A key such as ``csv`` whose value is a bare file name is resolved against the block's ``root`` when the
    block has one and the file exists there (the common ``root: images/, csv: labels.csv`` layout).
    """
    block = data.as_block()
    root = block.get("root")
    root_path = (base_dir / root) if isinstance(root, str) else None
    out: dict[str, Any] = {}
    for key, value in block.items():
        if key != "kind" and is_path_key(key) and isinstance(value, str) and "://" not in value:
            path = Path(value)
            if not path.is_absolute():
                in_root = root_path / path if root_path is not None and key != "root" else None
                path = in_root if in_root is not None and in_root.exists() else base_dir / path
            out[key] = str(path)
        else:
            out[key] = value
    return out


def missing_data_paths(resolved_block: Mapping[str, Any], encoder: str | None = None) -> list[str]:
    """Path-like values of a resolved data block that do not exist on disk.

    A ``{encoder}`` placeholder (per-encoder feature folders, e.g. ``features: feats/{encoder}``) is filled
    with ``encoder`` before checking; values with a placeholder are not checked when ``encoder`` is None.
    """
    missing = []
    for key, value in resolved_block.items():
        if key == "kind" or not is_path_key(key) or not isinstance(value, str) or "://" in value:
            continue
        if "{encoder}" in value:
            if encoder is None:
                continue
            value = value.replace("{encoder}", encoder)
        if not Path(value).exists():
            missing.append(value)
    return missing
