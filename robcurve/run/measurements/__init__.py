"""Measurements written as one module each (DESIGN.md): the module registers its run function,
its config section and its metrics. Importing this package registers them."""

from robcurve.run.measurements import ablation, jumpout_adaptive, window  # noqa: F401
