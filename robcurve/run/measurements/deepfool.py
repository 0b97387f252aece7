"""Measurement ``deepfool`` (an ``--attack``): the DeepFool minimal adversarial distance per sample."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from robcurve.attacks import run_attack
from robcurve.run.measures import Context, Measurement, attack_rows
from robcurve.run.metrics import Inputs, metric

NAME = "deepfool"


def run_deepfool(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    c = ctx.cfg.deepfool
    res = run_attack("deepfool", ctx.model, x, y, backend=ctx.cfg.attack_backend, norm=c.norm, steps=c.steps,
                     overshoot=c.overshoot, candidates=c.candidates,
                     **ctx.attack_kwargs(x, clean=False))  # DeepFool's clean forward is its first step's
    return attack_rows(res, y)


MEASUREMENT = Measurement(NAME, run_deepfool, "DeepFool minimal adversarial distance", 50, "deepfool", attack=True,
                          recheck="sample")


# -- metrics (METHOD.md §6) ------------------------------------------------------------------------
def _df_dist(i: Inputs) -> dict[str, tuple[np.ndarray, ...]]:
    ok = i.col("deepfool", "clean_correct", bool)
    v = np.where(i.col("deepfool", "success", bool), i.col("deepfool", "l2"), np.inf)
    return {i.cfg.deepfool.norm: (v[ok],)}


metric("deepfool_l2_median", "deepfool", "median DeepFool L2 distance (upper bound on the boundary distance)", "L2",
       "higher", "median", _df_dist, condition="norm", leaderboard=True)
metric("deepfool_success", "deepfool", "DeepFool success rate on correct samples", "fraction", "none", "share",
       lambda i: {i.cfg.deepfool.norm: (i.col("deepfool", "success", bool)[i.col("deepfool", "clean_correct", bool)],)},
       condition="norm")
