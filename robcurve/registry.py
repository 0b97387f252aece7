"""One small registry used for models, datasets, attacks, directions and metrics.

Entries are registered with a decorator, or lazily as a ``"package.module:object"`` target
that is imported on first use. An unknown name raises :class:`RobcurveError` naming the
closest registered names.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from robcurve.errors import RobcurveError

T = TypeVar("T")


def import_target(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the object."""
    if ":" not in target:
        raise RobcurveError(f"import target {target!r} has no ':'", fix="write it as package.module:object")
    mod_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise RobcurveError(f"cannot import module {mod_name!r}: {e}", fix="check the module path and that it is installed") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RobcurveError(f"module {mod_name!r} has no attribute {attr!r}", fix="check the object name after ':'") from None
    return obj


class Registry(Generic[T]):
    """Name -> object map with lazy targets, metadata and close-name suggestions."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T | str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError("registry entry needs a name")
            self._items[key] = obj
            self._meta[key] = meta
            return obj

        return deco

    def add(self, name: str, obj: T | str, **meta: Any) -> None:
        """Register ``obj`` (or a lazy ``"module:object"`` string) under ``name``."""
        self._items[name] = obj
        self._meta[name] = meta

    def get(self, name: str) -> T:
        if name not in self._items:
            raise RobcurveError(self.unknown_message(name), fix=f"choose one of: {', '.join(sorted(self._items))}")
        obj = self._items[name]
        if isinstance(obj, str):
            obj = import_target(obj)
            self._items[name] = obj
        return obj  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint}"

    def meta(self, name: str) -> dict[str, Any]:
        return self._meta.get(name, {})

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
