"""The built-in measurements written as one module each, imported together in a fixed order.

``robcurve.run.measures`` registers them as lazy entries pointing here (``"robcurve.run.builtins:
window.MEASUREMENT"``), so the registry never imports them (they import it). Importing them
together keeps their metrics in one registration order, whichever is asked for first: tables
and leaderboard entries list metrics in that order.
"""

from robcurve.run import layers
from robcurve.run.measurements import ablation, jumpout_adaptive, window

MODULES = (layers, window, ablation, jumpout_adaptive)

__all__ = ["MODULES", "ablation", "jumpout_adaptive", "layers", "window"]
