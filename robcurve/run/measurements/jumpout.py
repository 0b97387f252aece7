"""Measurement ``jumpout`` (an ``--attack``): curvature and travel distance before and after a small jump.

The fixed-size jump of METHOD.md §4 through :func:`robcurve.geometry.jump_out` (the one entry point of
jump-out; the ``jumpout`` attack wraps the same function). The "before" side reuses the batch's direction
and the ``trajectory`` measurement's curvature when it ran (same grid and settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from robcurve.geometry import jump_out
from robcurve.plots import new_figure
from robcurve.run.measures import Context, Measurement, direction, records
from robcurve.run.metrics import Inputs, metric
from robcurve.run.store import save_png

NAME = "jumpout"


def run_jumpout(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    j, t, tr = ctx.cfg.jumpout, ctx.cfg.trajectory, ctx.cfg.travel
    res = jump_out(ctx.model, x, y, eta=j.eta, jump=j.jump, direction=ctx.cfg.direction.kind,
                   keep_direction=j.keep_direction, seed=ctx.batch_seed(start), T=t.T, E=t.E, region=t.region,
                   ladder=tuple(t.ladder), h=tr.h, tol=tr.tol, eps_max=tr.eps_max, chunk_size=t.chunk_size,
                   clamp=ctx.cfg.direction.clamp, direction_options=ctx.cfg.direction_options(),
                   d=direction(ctx, start, x, y), curvature_before=ctx.cache.get(f"curvature:{start}"))
    return records(res.to_dataframe())


def plot_jumpout(s: dict[str, Any], out: Path) -> list[str]:
    """Summary hook: curvedness before against after the jump, and the shortcut ratios of curved and straight samples."""
    cfg, jo = s["cfg"], s["frames"]["jumpout"]
    ok = jo["correct"].astype(bool).to_numpy() & ~jo["censored_before"].astype(bool).to_numpy()
    cb = pd.to_numeric(jo["curvedness_before"], errors="coerce").to_numpy(float)
    ca = pd.to_numeric(jo["curvedness_after"], errors="coerce").to_numpy(float)
    sr = pd.to_numeric(jo["shortcut_ratio"], errors="coerce").to_numpy(float)
    fig, axes = new_figure(1, 2, figsize=(9, 3.8))
    axes[0].scatter(cb[ok], ca[ok], s=8, alpha=0.6)
    lim = [0, max(1e-3, np.nanmax(np.r_[cb[ok], ca[ok], 0]))]
    axes[0].plot(lim, lim, "k--", lw=0.8)
    axes[0].set_xlabel("curvedness before the jump")
    axes[0].set_ylabel("curvedness after the jump")
    thr = cfg.trajectory.curved_threshold
    for lab, sel in (("curved", ok & (cb > thr)), ("straight", ok & (cb <= thr))):
        v = sr[sel & np.isfinite(sr)]
        if v.size:
            axes[1].hist(v, bins=30, histtype="step", lw=1.5, label=f"{lab} (n={v.size}, <1: {np.mean(v < 1):.0%})")
    axes[1].axvline(1.0, color="k", ls="--", lw=0.8)
    axes[1].set_xlabel("shortcut ratio (η + distance after) / distance before")
    axes[1].legend(fontsize="small")
    fig.suptitle(f"{s['name']}: jump-out (η={cfg.jumpout.eta:.3g}, {cfg.jumpout.jump})")
    fig.tight_layout()
    save_png(fig, out / "jumpout.png")
    return ["jumpout.png"]


MEASUREMENT = Measurement(NAME, run_jumpout, "jump-out: curvature and travel distance before and after a small jump",
                          60, "jumpout", attack=True, plot=plot_jumpout)


# -- metrics (METHOD.md §6) ------------------------------------------------------------------------
def _jump(i: Inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ok = i.col("jumpout", "correct", bool) & ~i.col("jumpout", "censored_before", bool)
    sr = i.col("jumpout", "shortcut_ratio")
    good = ok & np.isfinite(sr)
    cb = i.col("jumpout", "curvedness_before")
    return good, sr, cb


def _jcond(i: Inputs) -> str:
    j = i.cfg.jumpout
    return f"eta={j.eta:.4g} {j.jump} {'keep' if j.keep_direction else 'recompute'}"


metric("shortcut_ratio_median", "jumpout", "median jump-out shortcut ratio (< 1: a near boundary hidden by curvature)",
       "ratio", "none", "median", lambda i: {_jcond(i): (_jump(i)[1][_jump(i)[0]],)}, condition="jump", leaderboard=True)


def _below(i: Inputs, curved: bool) -> dict[str, tuple[np.ndarray, ...]]:
    good, sr, cb = _jump(i)
    thr = i.cfg.trajectory.curved_threshold
    sel = good & ((cb > thr) if curved else (cb <= thr))
    return {_jcond(i): (sr[sel] < 1,)}


metric("shortcut_below_1_curved", "jumpout", "share of curved samples with shortcut ratio < 1", "fraction", "none",
       "share", lambda i: _below(i, True), condition="jump")
metric("shortcut_below_1_straight", "jumpout", "share of straight samples with shortcut ratio < 1", "fraction", "none",
       "share", lambda i: _below(i, False), condition="jump")
metric("curvedness_after_jump_median", "jumpout", "median curvedness after the jump", "1 - R^2", "none", "median",
       lambda i: {_jcond(i): (i.col("jumpout", "curvedness_after")[_jump(i)[0]],)}, condition="jump")
metric("curvedness_before_jump_median", "jumpout", "median curvedness before the jump (same samples)", "1 - R^2",
       "none", "median", lambda i: {_jcond(i): (i.col("jumpout", "curvedness_before")[_jump(i)[0]],)}, condition="jump")
metric("jump_flipped", "jumpout", "samples whose label the jump itself changed", "count", "none", "count",
       lambda i: {_jcond(i): (i.col("jumpout", "jump_flipped", bool),)}, condition="jump")
