"""The built-in measurements written as one module each, imported together in a fixed order.

``robcurve.run.measures`` registers them as lazy entries pointing here (``"robcurve.run.builtins:
window.MEASUREMENT"``), so the registry never imports them (they import it). Importing them
together keeps their metrics in one registration order, whichever is asked for first: tables
and leaderboard entries list metrics in that order (the order below; changing it changes the
order of rows in summaries and entries, not their values).
"""

# ruff: noqa: I001  (the import order below is the metric registration order: not alphabetical)
from robcurve.run.measurements import clean
from robcurve.run.measurements import trajectory
from robcurve.run.measurements import travel
from robcurve.run.measurements import pgd
from robcurve.run.measurements import pgd_distance
from robcurve.run.measurements import deepfool
from robcurve.run.measurements import jumpout
from robcurve.run.measurements import corruptions
from robcurve.run.measurements import adv_calibration
from robcurve.run import layers
from robcurve.run.measurements import window
from robcurve.run.measurements import ablation
from robcurve.run.measurements import jumpout_adaptive
from robcurve.run.sections import register_section

MODULES = (clean, trajectory, travel, pgd, pgd_distance, deepfool, jumpout, corruptions, adv_calibration, layers, window,
           ablation, jumpout_adaptive)

__all__ = ["MODULES", "ablation", "adv_calibration", "clean", "corruptions", "deepfool", "jumpout", "jumpout_adaptive",
           "layers", "pgd", "pgd_distance", "trajectory", "travel", "window"]

# their own config sections (the measurement registry resolves these modules lazily, so registration
# here, not in register_measurement)
for _m in MODULES:
    if _m.MEASUREMENT.config_model is not None:
        register_section(_m.MEASUREMENT.config, _m.MEASUREMENT.config_model)
