"""The config sections by name: one registry, read by the config, the measurements and ``robcurve metrics``.

A section is a pydantic model. The built-in ones are typed fields of
:class:`~robcurve.run.config.RunConfig` (their names are top-level keys of a config and of its digest)
and several measurements share them: ``trajectory`` (trajectory, jump-out), ``travel`` (travel,
jump-out, the window), ``pgd`` (pgd, adv_calibration, the PGD direction), ``calibration`` (corruptions
and every calibration metric). A measurement module with a section of its own (``window``,
``ablation``, ``jumpout_adaptive``, ``layers``, a plugin's) registers it here when it registers the
measurement; those sections live under ``options`` in a stored config, so a new one never changes the
digest of a run made without it. ``robcurve.run.config`` registers the built-ins; the measurement
modules are imported before the registry is first read (they register the rest).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robcurve.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import BaseModel


def _measurement_sections() -> None:
    """Import the built-in measurement modules (they register their own sections)."""
    importlib.import_module("robcurve.run.builtins")  # deferred: torch; they import this module


SECTIONS: Registry[type[BaseModel]] = Registry("config section", preload=_measurement_sections)


def register_section(name: str, model: type[BaseModel], **meta: Any) -> None:
    """Register ``model`` as config section ``name``; the same model again is a no-op, another one an error."""
    if SECTIONS.peek(name) is model:
        return
    SECTIONS.add(name, model, **meta)


def builtin(name: str) -> bool:
    """Whether section ``name`` is a typed field of RunConfig (else it lives under ``options``)."""
    return bool(SECTIONS.meta(name).get("builtin"))
