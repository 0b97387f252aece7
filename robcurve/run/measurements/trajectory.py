"""Measurement ``trajectory``: the representation trajectory along d on a fixed grid, and its curvature.

The penultimate features and the logits at T points of [-E, E] along the batch's shared direction d
(METHOD.md §2): curvedness 1 - R^2, straightness, total turning and the turning-angle ladder. The
curvature is kept in the batch cache as the jump-out's "before" side (same grid and settings). The
first :data:`PLOTTED_TRAJECTORIES` run positions store their path projected on its first two principal
components for the summary's figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from robcurve.geometry import curvature, trajectory
from robcurve.plots import draw_projection, new_figure, plot_curvature_hist, project_path
from robcurve.run.measures import Context, Measurement, direction, records
from robcurve.run.metrics import Inputs, metric, one
from robcurve.run.store import save_png

NAME = "trajectory"
#: number of run positions whose trajectory projection is stored for the summary's plots
PLOTTED_TRAJECTORIES = 6


def _projection(z: Tensor) -> tuple[list[list[float]], list[float]]:
    """A (T, D) path on its first two principal components, rounded for the store."""
    p, var = project_path(z)
    return [[round(float(a), 6), round(float(b), 6)] for a, b in p.tolist()], [round(float(v), 6) for v in var]


def run_trajectory(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    t = ctx.cfg.trajectory
    d = direction(ctx, start, x, y)
    traj = trajectory(ctx.model, x, d, T=t.T, E=t.E, clamp=ctx.cfg.direction.clamp, y=y, chunk_size=t.chunk_size)
    cur = curvature(traj, region=t.region, ladder=tuple(t.ladder))
    ctx.cache[f"curvature:{start}"] = cur  # the jump-out's "before" side (same grid and settings): shared
    rows = records(cur.to_dataframe())
    for i, r in enumerate(rows):  # the few trajectories drawn by the summary, projected to their plane
        if start + i < PLOTTED_TRAJECTORIES:
            pts, var = _projection(traj.features[i])
            r["plot"] = {"points": pts, "var": var, "eps": [round(float(e), 8) for e in traj.eps.tolist()],
                         "other": (traj.preds[i] != traj.clean_pred[i]).tolist()}
    return rows


def plot_trajectory(s: dict[str, Any], out: Path) -> list[str]:
    """Summary hook: the curvedness histogram, curvedness against travel (with ``travel``) and three paths."""
    fr, cfg, name = s["frames"], s["cfg"], s["name"]
    made = []
    inp = Inputs(fr, cfg)
    cv = inp.curvedness()
    fig = plot_curvature_hist({name: cv[inp.curv_ok]}, threshold=cfg.trajectory.curved_threshold,
                              xlabel=f"curvedness 1 − R² ({inp.scale_condition})")
    save_png(fig, out / "curvature_hist.png")
    made.append("curvature_hist.png")
    if "travel" in fr:
        tv = fr["travel"].reindex(fr["trajectory"].index)
        ok = inp.curv_ok & tv["correct"].fillna(False).to_numpy(bool)
        cens = tv["censored"].fillna(False).to_numpy(bool)
        eps = pd.to_numeric(tv["eps"], errors="coerce").to_numpy(float)
        fig, ax = new_figure(figsize=(5, 4))
        ax.scatter(cv[ok & ~cens], eps[ok & ~cens], s=8, alpha=0.6, label="flipped")
        if (ok & cens).any():
            ax.scatter(cv[ok & cens], np.full((ok & cens).sum(), cfg.travel.eps_max), marker="^", s=10,
                       label=f"censored (> {cfg.travel.eps_max:g})")
        ax.set_xlabel(f"curvedness 1 - R² ({inp.scale_condition})")
        ax.set_ylabel("travel distance ε (L∞)")
        ax.set_title(name)
        ax.legend()
        fig.tight_layout()
        save_png(fig, out / "curvature_vs_travel.png")
        made.append("curvature_vs_travel.png")
    tr = fr["trajectory"]
    if "plot" in tr.columns:
        stored = [(i, p) for i, p in tr["plot"].items() if isinstance(p, dict)]
        chosen = [(i, p) for i, p in stored if bool(tr.loc[i, "correct"])][:3] or stored[:3]
        if chosen:
            fig, axes = new_figure(1, len(chosen), figsize=(4 * len(chosen), 3.6))
            for (i, p), ax in zip(chosen, np.atleast_1d(axes), strict=True):
                draw_projection(p["points"], p["var"], p["eps"], p["other"], ax=ax, title=f"sample {i}: features")
            fig.tight_layout()
            save_png(fig, out / "trajectories.png")
            made.append("trajectories.png")
    return made


MEASUREMENT = Measurement(NAME, run_trajectory, "representation trajectory along d: curvature with its scale ladder",
                          10, "trajectory", recheck="direction", plot=plot_trajectory)


# -- metrics (METHOD.md §6) ------------------------------------------------------------------------
def _curv(i: Inputs, space: str = "feat") -> dict[str, tuple[np.ndarray, ...]]:
    return {i.scale_condition: (i.curvedness(space)[i.curv_ok],)}


metric("curvedness_median", "trajectory", "median headline curvedness 1 - R^2 of the penultimate response", "1 - R^2",
       "none", "median", _curv, condition="scale", leaderboard=True)
metric("curvedness_mean", "trajectory", "mean headline curvedness 1 - R^2 of the penultimate response", "1 - R^2",
       "none", "mean", _curv, condition="scale")
metric("curved_share", "trajectory", "share of samples whose curvedness exceeds the threshold", "fraction", "none",
       "share", lambda i: {f"{i.scale_condition} >{i.cfg.trajectory.curved_threshold:g}":
                           (i.curvedness()[i.curv_ok] > i.cfg.trajectory.curved_threshold,)},
       condition="scale and threshold", leaderboard=True)
metric("logit_curvedness_median", "trajectory", "median curvedness 1 - R^2 of the logits", "1 - R^2", "none", "median",
       lambda i: _curv(i, "logit"), condition="scale")
metric("total_turning_mean", "trajectory", "mean total turning of the penultimate path", "deg per unit eps", "none",
       "mean", lambda i: {i.scale_condition: (i.col("trajectory", "feat_total_turning")[i.curv_ok],)}, condition="scale")
metric("straightness_median", "trajectory", "median straightness over [-E, E] (1 = straight)", "fraction", "none",
       "median", lambda i: {i.scale_condition: (i.col("trajectory", f"feat_straightness_E{i.curv_col()[1]}")[i.curv_ok],)},
       condition="scale")


def _ladder(i: Inputs, space: str) -> dict[str, tuple[np.ndarray, ...]]:
    out = {}
    for c, h in Inputs.pattern_cols(i.frame("trajectory"), rf"{space}_angle_h(.+)"):
        v = i.col("trajectory", c)[i.curv_ok]
        if np.isfinite(v).any():
            out[f"h={h}"] = (v,)
    return out


metric("angle_mean", "trajectory", "mean penultimate turning angle at grid step h", "deg", "none", "mean",
       lambda i: _ladder(i, "feat"), condition="ladder step")
metric("logit_angle_mean", "trajectory", "mean logit turning angle at grid step h", "deg", "none", "mean",
       lambda i: _ladder(i, "logit"), condition="ladder step")
metric("unresolved", "trajectory", "correct samples whose in-class region has < 5 grid points", "count", "none",
       "count", lambda i: one(i.col("trajectory", "unresolved", bool)[i.col("trajectory", "correct", bool)]))
