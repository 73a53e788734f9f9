"""The package's import rules, checked on the source: parts import only the parts below them, and no circles.

Data flows one way — slide → tiles → features → tasks — so ``wsi`` knows no models, ``models`` no slides, the
benchmark (``eval``) opens no slide and pretraining depends on no part of the benchmark. Shared base modules
(errors, atomic writes, hashing, the registry, runtime, progress, weights) import no part. Every import counts,
also the ones inside functions: a lazy import that runs back up is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gpfm"
BASE = {"errors", "atomic", "hashing", "registry", "runtime", "progress", "weights", "__init__"}
#: part → the parts it may import (besides itself and the base modules)
ALLOWED = {
    "models": set(),
    "wsi": set(),
    "extract": {"models", "wsi"},
    "pretrain": {"models", "wsi"},
    "eval": {"models"},
    "cli": {"models", "wsi", "extract", "pretrain", "eval"},
    "__main__": {"cli"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gpfm"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gpfm") and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def test_parts_import_only_the_parts_below_them():
    bad = []
    for module, targets in _graph().items():
        part = _part(module)
        for target in targets:
            other = _part(target)
            if other == part or other in BASE:
                continue
            if part in BASE or other not in ALLOWED.get(part, set()):
                bad.append(f"{module} -> {target}")
    assert not bad, "imports across the rules:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("part", ["eval", "models", "wsi", "extract", "pretrain"])
def test_no_import_circles(part):
    graph = {m: {t for t in ts if _part(t) == part} for m, ts in _graph().items() if _part(m) == part}
    assert _cycles(graph) == []
