"""Measurement ``travel``: the travel distance along d to the first label flip (bisection, METHOD.md §3).

The result is kept in the batch cache for the boundary-relative window (same inputs, same search).
Registered here too, after travel's own metrics: the within-model relations of the trajectory's
curvedness with travel and with confidence (they read the ``trajectory`` rows; the summary lists
metrics in registration order).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import Tensor

from robcurve.geometry import travel_distance
from robcurve.run.measures import Context, Measurement, direction, records
from robcurve.run.metrics import Inputs, metric, one

NAME = "travel"


def run_travel(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    t = ctx.cfg.travel
    d = direction(ctx, start, x, y)
    res = travel_distance(ctx.model, x, y, d, h=t.h, tol=t.tol, eps_max=t.eps_max, clamp=ctx.cfg.direction.clamp)
    ctx.cache[f"travel:{start}"] = res  # shared with the boundary-relative window (same inputs, same search)
    return records(res.to_dataframe())


MEASUREMENT = Measurement(NAME, run_travel, "travel distance along d to the first label flip", 20, "travel",
                          recheck="direction")


# -- metrics (METHOD.md §6) ------------------------------------------------------------------------
metric("travel_median", "travel", "median travel distance along d to the first label flip", "Linf eps", "higher",
       "median", lambda i: one(i.travel("eps")[i.travel_ok]), leaderboard=True)
metric("travel_median_l2", "travel", "median travel distance, L2 norm of eps d", "L2", "higher", "median_only",
       lambda i: one(i.travel("l2")[i.travel_ok]))
metric("travel_censored", "travel", "correct samples not flipped by travel.eps_max", "count", "none", "count",
       lambda i: one(i.col("travel", "censored", bool)[i.travel_ok]))


def _spear_travel(i: Inputs) -> dict[str, tuple[np.ndarray, ...]]:
    tr = i.frame("trajectory")
    tv = i.frame("travel").reindex(tr.index)
    ok = i.curv_ok & tv["correct"].fillna(False).to_numpy(bool)
    eps = np.where(tv["censored"].fillna(False).to_numpy(bool), np.inf, pd.to_numeric(tv["eps"], errors="coerce"))
    return {i.scale_condition: (i.curvedness()[ok], eps[ok])}


metric("spearman_curvedness_travel", "trajectory", "Spearman(curvedness, travel distance) within the model", "rho",
       "none", "spearman", _spear_travel, requires=("travel",), condition="scale", leaderboard=True)


def _spear_conf(i: Inputs) -> dict[str, tuple[np.ndarray, ...]]:
    conf = i.frame("clean")["conf"].reindex(i.frame("trajectory").index).to_numpy(float)
    return {i.scale_condition: (i.curvedness()[i.curv_ok], conf[i.curv_ok])}


metric("spearman_curvedness_confidence", "trajectory", "Spearman(curvedness, confidence) within the model", "rho",
       "none", "spearman", _spear_conf, condition="scale", leaderboard=True)
