"""Reproducing the paper's findings: training evolution (``track``) and the report (``reproduce``).

* :func:`track`: the same run config measured on every checkpoint of one or more training
  series (one bench run folder per checkpoint, so it resumes for free), tabulated with
  condition ``epoch=k`` and plotted against epoch.
* :func:`reproduce`: the paper's findings measured on the given models (the zoo's
  Transformers and CNNs by default) with a verdict per claim, as Markdown, HTML and JSON.

Both sit above the bench runner and read results through :func:`robcurve.load_run` only.
"""

from __future__ import annotations

from typing import Any

_API = {
    "track": "robcurve.reproduce.track:track",
    "parse_series": "robcurve.reproduce.track:parse_series",
    "Checkpoint": "robcurve.reproduce.track:Checkpoint",
    "TrackResult": "robcurve.reproduce.track:TrackResult",
    "load_track": "robcurve.reproduce.track:load_track",
    "reproduce": "robcurve.reproduce.paper:reproduce",
    "paired_difference": "robcurve.reproduce.stats:paired_difference",
    "verdict": "robcurve.reproduce.stats:verdict",
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        mod, _, attr = _API[name].partition(":")
        obj = getattr(importlib.import_module(mod), attr)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'robcurve.reproduce' has no attribute {name!r}")
