"""One generic name → factory registry, for every kind of constructible thing.

Encoders, tissue segmenters, slide backends, task families, protocols, task loaders, report drawers and MIL
aggregators use it. (Pretraining losses do not: the UNKD objective is a fixed sum of named terms built in
``gpfm.pretrain.meta_arch``; the expert CLS loss is chosen by ``distill.cls_loss``.)
Every constructible thing in gpfm is created from its name, so configs, the CLI and tests hold only strings.
A registry refuses duplicate names and fails loudly, listing the known names, on an unknown one.

A registry can *discover* its entries: given ``discover="gpfm.models.encoders"``, the first lookup imports every
module of that package (sorted; names starting with ``_`` are skipped), and each module registers what it
defines. Adding an entry is therefore adding one file to the package — no list to edit, and no module has to
import all the others for its side effects.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gpfm.errors import GpfmError

T = TypeVar("T")


class UnknownNameError(GpfmError, KeyError):
    """Raised when a name is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A name → object mapping with loud failures.

    Args:
        kind: what the registry holds, used in error messages ("encoder", "protocol", ...).
        discover: a package whose modules are imported on the first lookup (they register the entries).

    Example:
        >>> losses = Registry[type]("loss")
        >>> @losses.register("dino")
        ... class DinoLoss: ...
        >>> losses.get("dino") is DinoLoss
        True
    """

    def __init__(self, kind: str, discover: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._discover = discover
        self._discovered = discover is None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered; names must be unique")
            self._items[name] = item
            return item

        return _add if obj is None else _add(obj)

    def _ensure_discovered(self) -> None:
        if not self._discovered:
            self._discovered = True  # first: modules that register while being imported must not recurse
            import_package_modules(str(self._discover))

    def get(self, name: str) -> T:
        """Return the object registered under ``name``, or raise with the known names and a suggestion."""
        self._ensure_discovered()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        self._ensure_discovered()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs, sorted by name."""
        self._ensure_discovered()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure_discovered()
        return len(self._items)


def import_package_modules(package: str) -> list[str]:
    """Import every module of ``package`` (sorted, skipping ``_private`` ones); returns their names."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
