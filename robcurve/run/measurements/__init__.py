"""Measurements written as one module each (DESIGN.md): each module defines ``MEASUREMENT`` (its run
function and config section) and registers its metrics. ``robcurve.run.builtins`` imports them (in one
order) when the measurement registry first needs one."""
