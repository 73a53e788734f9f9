"""One generic name → factory registry, used for encoders, losses, protocols and tasks.

Every constructible thing in gpfm is created from its name, so configs, the CLI and tests hold only strings.
A registry refuses duplicate names and fails loudly, listing the known names, on an unknown one.
"""

from __future__ import annotations

import difflib
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

    Example:
        >>> losses = Registry[type]("loss")
        >>> @losses.register("dino")
        ... class DinoLoss: ...
        >>> losses.get("dino") is DinoLoss
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered; names must be unique")
            self._items[name] = item
            return item

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        """Return the object registered under ``name``, or raise with the known names and a suggestion."""
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
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
