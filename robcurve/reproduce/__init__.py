"""Reproducing the paper's findings: training evolution (``track``) and the report (``reproduce``).

* :func:`track`: the same run config measured on every checkpoint of one or more training
  series (one bench run folder per checkpoint, so it resumes for free), tabulated with
  condition ``epoch=k`` and plotted against epoch.
* :func:`reproduce`: the paper's findings as verdicts over the verified entries of a
  leaderboard (the population board by default) and the training series, as Markdown, HTML
  and JSON; :func:`build_report` rebuilds a report from the per-sample files its
  ``inputs.json`` names, without any model.
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
    "build_report": "robcurve.reproduce.study:build_report",
    "load_study": "robcurve.reproduce.study:load_study",
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
