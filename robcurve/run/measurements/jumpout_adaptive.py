"""Measurement ``jumpout_adaptive``: the jump-out that is checked to leave the curved region (METHOD.md §4).

Registers the config section, the run function and the metrics; the search is
:func:`robcurve.geometry.adaptive_jump.adaptive_jump`. It reuses the batch's shared window pass
(d, t, boundary-side curvedness) and runs on the run's first ``max_samples`` correct samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from robcurve.geometry import get_direction, travel_distance
from robcurve.geometry.adaptive_jump import adaptive_jump
from robcurve.run.measurements.window import measured_prefix, window_pass
from robcurve.run.measurements.window import settings as window_settings
from robcurve.run.measures import Context, Measurement
from robcurve.run.metrics import Inputs, metric

NAME = "jumpout_adaptive"


class AdaptiveJumpCfg(BaseModel):
    """Config section ``jumpout_adaptive`` (η in L∞ pixel units)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    etas: list[float] = Field(default_factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255],
                              description="jump sizes tried, smallest first; the last is the cap")
    max_samples: int | None = Field(50, ge=1, description="search only the run's first samples (None: all)")
    null_draws: int = Field(4, ge=1, le=32, description="random jumps tried for the null control")


def run_adaptive(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    cfg = ctx.cfg.section(NAME)
    ws = window_settings(ctx.cfg)
    tr = ctx.cfg.travel
    n = len(y)
    k = measured_prefix(n, start, cfg.max_samples)
    rows: list[dict] = [{"measured": False} for _ in range(n)]
    if k == 0:
        return rows
    wp = window_pass(ctx, start, x, y)
    ok = torch.nonzero(wp["correct"][:k]).flatten()
    for i in range(k):
        rows[i] = {"measured": True, "correct": bool(wp["correct"][i])}
    if len(ok) == 0:
        return rows
    seed = ctx.batch_seed(start)

    def direction_fn(xx: Tensor, yy: Tensor) -> Tensor:
        return get_direction(ctx.model, xx, yy, kind=ctx.cfg.direction.kind, seed=seed, **ctx.cfg.direction_options())

    def travel_fn(xx: Tensor, yy: Tensor, dd: Tensor) -> tuple[Tensor, Tensor]:
        r = travel_distance(ctx.model, xx, yy, dd, h=tr.h, tol=tr.tol, eps_max=tr.eps_max, clamp=ctx.cfg.direction.clamp)
        eps = torch.as_tensor(r.eps, dtype=torch.float64)
        cens = torch.as_tensor(r.censored).bool() | torch.isnan(eps)
        return torch.where(cens, torch.full_like(eps, tr.eps_max), eps), cens

    i_dev = ok.to(x.device)
    c0 = wp["w"].feat_side[ok]
    res = adaptive_jump(ctx.model, x[i_dev], y[i_dev], wp["d"][i_dev], wp["t"][ok].to(x.device), c0,
                        direction_fn=direction_fn, travel_fn=travel_fn, threshold=ws.curved_threshold,
                        etas=cfg.etas, seed=seed, points=ws.points, fraction=ws.fraction, chunk=ws.chunk_size,
                        null_draws=cfg.null_draws)

    def num(v: float) -> float | None:
        return float(v) if math.isfinite(float(v)) else None

    for j, s in enumerate(ok.tolist()):
        rows[s].update({"c0": num(c0[j]), "t0": num(wp["t"][s]), "curved": bool(res.curved[j]),
                        "jumped": bool(res.jumped[j]), "eta": num(res.eta[j]), "kind": res.kind[j],
                        "t_after": num(res.t_after[j]), "c_after": num(res.c_after[j]), "ratio": num(res.ratio[j]),
                        "null_ratio": num(res.null_ratio[j]), "null_c_after": num(res.null_c_after[j])})
    return rows


MEASUREMENT = Measurement(NAME, run_adaptive, "adaptive jump-out: the smallest jump that straightens a curved "
                          "sample, its shortcut ratio, and null / straight-sample controls", 65, NAME,
                          AdaptiveJumpCfg)


def _sel(i: Inputs, col: str, group: str) -> np.ndarray:
    m = i.col(NAME, "measured", bool) & i.col(NAME, "correct", bool)
    curved, jumped = i.col(NAME, "curved", bool), i.col(NAME, "jumped", bool)
    mask = {"curved": m & curved, "curved_jumped": m & curved & jumped, "straight": m & ~curved & jumped}[group]
    v = i.col(NAME, col) if col != "jumped" else jumped.astype(float)
    return v[mask & (np.isfinite(v) if col != "jumped" else True)]


_C = "condition"
metric("ajo_jumped_out_share", NAME, "share of curved samples that a jump within the cap straightened (label kept)",
       "fraction", "none", "share", lambda i: {"curved samples": (_sel(i, "jumped", "curved") > 0,)}, leaderboard=True)
metric("ajo_eta_median", NAME, "median smallest straightening jump eta* of the curved samples that jumped out", "Linf eps",
       "none", "median", lambda i: {"curved, jumped out": (_sel(i, "eta", "curved_jumped"),)})
metric("ajo_ratio_median", NAME, "median shortcut ratio (eta* + t') / t0 of curved samples that jumped out "
       "(< 1: a near boundary hidden by the curvature)", "ratio", "none", "median",
       lambda i: {"curved, jumped out": (_sel(i, "ratio", "curved_jumped"),),
                  "null jump (same eta, not straightened)": (_sel(i, "null_ratio", "curved_jumped"),),
                  "straight samples (first eta, random)": (_sel(i, "ratio", "straight"),)}, condition="group")
metric("ajo_ratio_below1_share", NAME, "share of shortcut ratios below 1", "fraction", "none", "share",
       lambda i: {"curved, jumped out": (_sel(i, "ratio", "curved_jumped") < 1,),
                  "null jump (same eta, not straightened)": (_sel(i, "null_ratio", "curved_jumped") < 1,),
                  "straight samples (first eta, random)": (_sel(i, "ratio", "straight") < 1,)}, condition="group")
metric("ajo_ratio_minus_null_median", NAME, "median per-sample shortcut ratio minus its null jump's ratio (curved samples "
       "with both; < 0: straightening finds the boundary nearer than a jump of the same size that does not)", "ratio",
       "none", "median", lambda i: {"curved, jumped out": (
           (lambda a, b: (a - b)[np.isfinite(a) & np.isfinite(b)])(
               i.col(NAME, "ratio")[i.col(NAME, "curved", bool) & i.col(NAME, "jumped", bool)],
               i.col(NAME, "null_ratio")[i.col(NAME, "curved", bool) & i.col(NAME, "jumped", bool)]),)}, leaderboard=True)
