"""Measurement ``pgd_distance``: the smallest successful PGD budget per sample (bisection over budgets)."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from robcurve.attacks import pgd_distance
from robcurve.run.measures import Context, Measurement
from robcurve.run.metrics import Inputs, metric

NAME = "pgd_distance"


def run_pgd_distance(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    p, pd_ = ctx.cfg.pgd, ctx.cfg.pgd_distance
    res = pgd_distance(ctx.model, x, y, norm=p.norm, hi=pd_.hi, bisection_steps=pd_.bisection_steps, steps=pd_.steps,
                       seed=ctx.batch_seed(start), loss=pd_.loss, **ctx.attack_kwargs(x))
    return [{"budget": float(res.budget[i]), "censored": bool(res.censored[i]), "clean_correct": bool(res.clean_correct[i])}
            for i in range(len(y))]


MEASUREMENT = Measurement(NAME, run_pgd_distance, "smallest successful PGD budget per sample (bisection)", 40,
                          "pgd_distance")


# -- metrics (METHOD.md §6) ------------------------------------------------------------------------
def _pgd_dist(i: Inputs) -> dict[str, tuple[np.ndarray, ...]]:
    ok = i.col("pgd_distance", "clean_correct", bool)
    v = np.where(i.col("pgd_distance", "censored", bool), np.inf, i.col("pgd_distance", "budget"))
    return {f"{i.cfg.pgd.norm} {i.cfg.pgd_distance.loss} loss": (v[ok],)}


metric("pgd_distance_median", "pgd_distance", "median smallest PGD budget that succeeds (bisection)", "budget",
       "higher", "median", _pgd_dist, condition="norm and loss", leaderboard=True)
metric("pgd_distance_censored", "pgd_distance", "correct samples PGD did not flip at the largest budget", "count",
       "none", "count", lambda i: {f"{i.cfg.pgd.norm} {i.cfg.pgd_distance.loss} loss": (
           i.col("pgd_distance", "censored", bool)[i.col("pgd_distance", "clean_correct", bool)],)},
       condition="norm and loss")
