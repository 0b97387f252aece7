"""Third-party plugins through entry points (and ``--plugins module`` for quick experiments).

A distribution adds to robcurve without editing it by declaring entry points::

    [project.entry-points."robcurve.models"]
    toy = "my_pkg.models:load_toy"          # a model source: load_toy(name) -> RobcurveModel ("toy:<name>")

    [project.entry-points."robcurve.measurements"]
    my_measure = "my_pkg.measure"           # a module that registers measurements (and their metrics) on import

Groups: ``robcurve.models`` (name = source, value = loader), and ``robcurve.measurements``,
``robcurve.metrics``, ``robcurve.attacks``, ``robcurve.datasets`` (value = a module imported for
its registrations, or ``module:function`` called with no arguments). A model source is added
lazily (imported on first use); a module plugin is imported when plugins load (the CLI does it
before every command; API users call :func:`load`). A plugin that fails is reported by name on
one line and the rest of robcurve works; a plugin whose name a built-in already has is refused
with a warning naming both. ``robcurve plugins`` lists what was loaded and from where.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points

from robcurve.errors import one_line
from robcurve.registry import import_target

GROUPS = ("robcurve.models", "robcurve.measurements", "robcurve.metrics", "robcurve.attacks", "robcurve.datasets")


@dataclass
class Plugin:
    group: str
    name: str
    value: str
    dist: str
    status: str  # "loaded", "lazy", "failed: ...", "refused: ..."


_LOADED: list[Plugin] = []
_DONE = False


def _dist(ep) -> str:
    d = getattr(ep, "dist", None)
    return f"{d.name} {d.version}" if d is not None else "?"


def _run_module(value: str) -> None:
    if ":" in value:
        import_target(value)()
    else:
        importlib.import_module(value)


def load(modules: tuple[str, ...] | list[str] = (), quiet: bool = False) -> list[Plugin]:
    """Load entry-point plugins once (and the given ``--plugins`` modules); return what was found."""
    global _DONE

    found: list[Plugin] = []
    if not _DONE:
        _DONE = True
        for group in GROUPS:
            for ep in entry_points().select(group=group):
                p = Plugin(group, ep.name, ep.value, _dist(ep), "")
                try:
                    if group == "robcurve.models":
                        # deferred: torch, imported only when a model plugin exists
                        from robcurve.models import SOURCES

                        if ep.name in SOURCES:
                            origin = SOURCES.meta(ep.name).get("plugin") or "robcurve (built-in)"
                            p.status = f"refused: model source {ep.name!r} is already provided by {origin}"
                        else:
                            SOURCES.add(ep.name, ep.value, help=f"plugin ({p.dist})", plugin=p.dist)
                            p.status = "lazy"
                    else:
                        _run_module(ep.value)
                        p.status = "loaded"
                except Exception as e:  # a broken plugin must not break robcurve: report it and go on
                    p.status = f"failed: {type(e).__name__}: {one_line(e, 200)}"
                found.append(p)
        _LOADED.extend(found)
    for mod in modules:
        p = Plugin("--plugins", mod, mod, "(command line)", "")
        try:
            _run_module(mod)
            p.status = "loaded"
        except Exception as e:
            p.status = f"failed: {type(e).__name__}: {one_line(e, 200)}"
        found.append(p)
        _LOADED.append(p)
    if not quiet:
        for p in found:
            if p.status.startswith(("failed", "refused")):
                print(f"robcurve: warning: plugin {p.name!r} ({p.group}, {p.dist}) {p.status}", file=sys.stderr)
    return found


def loaded() -> list[Plugin]:
    return list(_LOADED)
