"""One small registry used for models, datasets, attacks, directions and metrics.

Entries are registered with a decorator, or lazily as a ``"package.module:object"`` target
that is imported on first use. An unknown name raises :class:`RobcurveError` naming the
closest registered names. Registering a name twice raises ``InputError`` (a ``ValueError``
and a ``RobcurveError``): two plugins silently shadowing each other is a bug. Pass
``replace=True`` to override an entry on purpose.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from robcurve.errors import InputError, RobcurveError, one_line

T = TypeVar("T")


def import_target(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the object.

    Any failure while importing the module (missing module, or an exception raised by the
    module's own code, such as a SyntaxError) becomes one :class:`RobcurveError`.
    """
    if not isinstance(target, str) or ":" not in target:
        raise RobcurveError(f"import target {target!r} has no ':'", fix="write it as package.module:object")
    mod_name, _, attr = target.partition(":")
    if not mod_name or not attr:
        raise RobcurveError(f"import target {target!r} needs both a module and an object name",
                            fix="write it as package.module:object")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise RobcurveError(f"cannot import module {mod_name!r}: {one_line(e)}",
                            fix="check the module path and that it is installed (or is a .py file in the current folder)") from None
    except Exception as e:  # the module's own code failed while importing
        raise RobcurveError(f"importing module {mod_name!r} failed: {type(e).__name__}: {one_line(e, 300)}",
                            fix="fix the error in that module (rerun with --debug for its traceback)") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RobcurveError(f"module {mod_name!r} has no attribute {attr!r}", fix="check the object name after ':'") from None
    return obj


class Registry(Generic[T]):
    """Name -> object map with lazy targets, metadata and close-name suggestions."""

    def __init__(self, kind: str, preload: Callable[[], None] | None = None):
        self.kind = kind
        self._items: dict[str, T | str] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        #: called once, before the registry is first read: registers the built-in entries that live in
        #: modules which import this registry (the metrics of the measurement modules), so that reading
        #: it never depends on what happened to be imported before
        self._preload = preload

    def _ensure(self) -> None:
        if self._preload is not None:
            fn, self._preload = self._preload, None  # cleared first: the modules it imports register here
            fn()

    def _put(self, name: str, obj: T | str, meta: dict[str, Any], replace: bool) -> None:
        if not isinstance(name, str) or not name:
            raise InputError(f"a {self.kind} needs a non-empty string name, got {name!r}", fix="register it under a name")
        if name in self._items and not replace:
            raise InputError(f"{self.kind} {name!r} is already registered",
                             fix="choose another name, or pass replace=True to override the existing entry on purpose")
        self._items[name] = obj
        self._meta[name] = meta

    def register(self, name: str | None = None, *, replace: bool = False, **meta: Any) -> Callable[[T], T]:
        """Decorator registering the object under ``name`` (default: its ``__name__``).

        Raises :class:`~robcurve.errors.InputError` (a ``ValueError``) if the name is taken, unless ``replace=True``.
        """
        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            self._put(key, obj, meta, replace)
            return obj

        return deco

    def add(self, name: str, obj: T | str, *, replace: bool = False, **meta: Any) -> None:
        """Register ``obj`` (or a lazy ``"module:object"`` string) under ``name``.

        Raises :class:`~robcurve.errors.InputError` (a ``ValueError``) if the name is taken, unless ``replace=True``.
        """
        self._put(name, obj, meta, replace)

    def get(self, name: str) -> T:
        self._ensure()
        if name not in self._items:
            raise RobcurveError(self.unknown_message(name), fix=f"choose one of: {', '.join(sorted(self._items))}")
        obj = self._items[name]
        if isinstance(obj, str):
            obj = import_target(obj)
            self._items[name] = obj
        return obj  # type: ignore[return-value]

    def peek(self, name: str) -> T | str | None:
        """The entry under ``name`` as registered (a lazy target stays a string), or None; loads nothing."""
        return self._items.get(name)

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint}"

    def meta(self, name: str) -> dict[str, Any]:
        return self._meta.get(name, {})

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._items)

    def names_in_order(self) -> list[str]:
        """Names in registration order (tables list metrics in the order they were registered)."""
        self._ensure()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
