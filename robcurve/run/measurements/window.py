"""Measurement ``window``: curvedness on windows scaled to each sample's own travel distance.

The headline curvedness of robcurve (METHOD.md §2, "boundary-relative window"). One module
registers all of it: the config section ``window``, the run function and the metrics.

Per sample: the region label (true label if correct, else the predicted one, so that
misclassified samples are measured in the region of their predicted class and per-sample
"correct − confidence" can be related to curvature over all samples), the direction d (the
run's rule at the region label), the travel distance t to the first flip of the region label
(ε_max when censored), and 1 − R² of the penultimate features and of the logits on the
boundary side [0, f t] and the symmetric window [−f t, f t] (``points`` each).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from robcurve import stats
from robcurve.geometry import get_direction, travel_distance
from robcurve.geometry.window import window_curvature
from robcurve.run.measures import Context, Measurement, batched_logits, direction
from robcurve.run.metrics import AGGREGATORS, Aggregated, Aggregator, Inputs, metric
from robcurve.stats import rankdata

NAME = "window"


class WindowCfg(BaseModel):
    """Config section ``window`` (fractions of each sample's travel distance t)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    fraction: float = Field(1.0, gt=0, le=4, description="window half-width as a fraction f of t")
    points: int = Field(41, ge=5, le=2001, description="grid points per window (the same for every sample)")
    curved_threshold: float = Field(0.05, ge=0, le=1, description="a sample is curved when 1 - R^2 on the boundary side exceeds this")
    # 64: the fastest of 64 / 128 / 256 / 2048 on the zoo ViT, ResNet, Swin and ConvNeXt (1.3-2.8x the former
    # 2048; README "Performance"). Fixed, not measured per machine: the same batches give the same float rounding
    # everywhere. Runs stored with 2048 keep it (their config says so) and re-measure exactly.
    chunk_size: int = Field(64, ge=1, description="inputs per forward (a performance setting: changes float rounding "
                                                  "at most, left out of a board's protocol)")


def settings(cfg) -> WindowCfg:
    return cfg.section(NAME) if hasattr(cfg, "section") else WindowCfg()


def condition(cfg, side: str) -> str:
    s = settings(cfg)
    span = f"[0, {s.fraction:g}t]" if side == "side" else f"[-{s.fraction:g}t, {s.fraction:g}t]"
    return f"{'boundary side' if side == 'side' else 'symmetric'} {span} P={s.points}"


def measured_prefix(n: int, start: int, max_samples: int | None) -> int:
    """How many of a batch's n samples (at run position ``start``) are among the run's first ``max_samples``."""
    return n if max_samples is None else max(0, min(n, max_samples - start))


def window_pass(ctx: Context, start: int, x: Tensor, y: Tensor) -> dict:
    """The batch's shared window pass (region labels, d, t, curvature), computed once per batch."""
    key = f"window:{start}"
    if key not in ctx.cache:
        ctx.cache[key] = _window_pass(ctx, start, x, y)
    return ctx.cache[key]


def _window_pass(ctx: Context, start: int, x: Tensor, y: Tensor) -> dict:
    s = settings(ctx.cfg)
    tr = ctx.cfg.travel
    logits = ctx.cache.get("clean_logits")
    if logits is None:
        logits = batched_logits(ctx.model, x)
    logits = logits.cpu()
    pred = logits.argmax(1)
    yc = y.cpu()
    correct = pred == yc
    region = torch.where(correct, yc, pred).to(x.device)
    if bool(correct.all()):
        d = direction(ctx, start, x, y)  # the run's shared direction of this batch
    else:  # the rule at the region label (equal to the shared one for correct samples)
        d = get_direction(ctx.model, x, region, kind=ctx.cfg.direction.kind, seed=ctx.batch_seed(start),
                          **ctx.cfg.direction_options())
    key = f"travel:{start}"
    if key in ctx.cache and bool(correct.all()):
        trav = ctx.cache[key]
    else:
        trav = travel_distance(ctx.model, x, region, d, h=tr.h, tol=tr.tol, eps_max=tr.eps_max,
                               clamp=ctx.cfg.direction.clamp)
    eps = torch.as_tensor(trav.eps, dtype=torch.float64).cpu()
    censored = torch.as_tensor(trav.censored).cpu().bool() | torch.isnan(eps)
    t = torch.where(censored, torch.full_like(eps, tr.eps_max), eps)
    w = window_curvature(ctx.model, x, d, t, censored, points=s.points, fraction=s.fraction,
                         clamp=ctx.cfg.direction.clamp, chunk=s.chunk_size)
    return {"d": d, "t": t, "censored": censored, "w": w, "logits": logits, "pred": pred, "correct": correct}


def run_window(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    wp = window_pass(ctx, start, x, y)
    logits, pred, correct, t, censored, w = (wp[k] for k in ("logits", "pred", "correct", "t", "censored", "w"))
    p = torch.softmax(logits.double(), 1)
    conf = p.max(1).values
    top2 = logits.double().topk(2, 1).values
    margin = top2[:, 0] - top2[:, 1]

    def num(v: Tensor) -> float | None:
        f = float(v)
        return f if math.isfinite(f) else None

    return [{"correct": bool(correct[i]), "pred": int(pred[i]), "conf": float(conf[i]), "margin": float(margin[i]),
             "t": float(t[i]), "censored": bool(censored[i]), "feat_side": num(w.feat_side[i]),
             "feat_sym": num(w.feat_sym[i]), "logit_side": num(w.logit_side[i]), "logit_sym": num(w.logit_sym[i])}
            for i in range(len(y))]


MEASUREMENT = Measurement(NAME, run_window, "curvedness on windows scaled to each sample's travel distance "
                          "(the headline; misclassified samples in their predicted class's region)", 25, NAME,
                          WindowCfg)


# -- metrics ------------------------------------------------------------------------------------------
def _partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    if len(x) < 5:
        return math.nan
    r = np.corrcoef(np.vstack([rankdata(x), rankdata(y), rankdata(z)]))
    rxy, rxz, ryz = r[0, 1], r[0, 2], r[1, 2]
    den = math.sqrt(max(0.0, (1 - rxz**2) * (1 - ryz**2)))
    return float((rxy - rxz * ryz) / den) if den > 0 else math.nan


def _agg_partial(a: tuple[np.ndarray, ...], c) -> Aggregated:
    x, y, z = (np.asarray(v, float) for v in a)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z = x[ok], y[ok], z[ok]
    ci = stats.bootstrap_percentile([x, y, z], _partial_spearman, min(c.bootstrap, 500), c.seed) if x.size >= 5 else None
    return Aggregated(_partial_spearman(x, y, z), *(ci or (None, None)), stats.PERCENTILE_METHOD if ci else "none",
                      int(x.size))


AGGREGATORS.add("partial_spearman", Aggregator("partial_spearman", _agg_partial,
                                               "partial Spearman of two per-sample values given a third; percentile bootstrap interval"))


def _col(i: Inputs, c: str, dtype=float) -> np.ndarray:
    return i.col(NAME, c, dtype)


def _curv(i: Inputs, space: str, side: str) -> dict:
    ok = _col(i, "correct", bool)
    v = _col(i, f"{space}_{side}")
    return {condition(i.cfg, side): (v[ok & np.isfinite(v)],)}


metric("bw_curvedness_median", NAME, "median curvedness 1 - R^2 of the penultimate response on the boundary-side "
       "window [0, f t] scaled to each sample's travel distance t (the headline; correct samples)", "1 - R^2", "none",
       "median", lambda i: _curv(i, "feat", "side"), condition="window", leaderboard=True)
metric("bw_sym_curvedness_median", NAME, "median curvedness 1 - R^2 of the penultimate response on the symmetric "
       "window [-f t, f t] (correct samples)", "1 - R^2", "none", "median", lambda i: _curv(i, "feat", "sym"),
       condition="window")
metric("bw_logit_curvedness_median", NAME, "median curvedness 1 - R^2 of the logits on the boundary-side window "
       "(correct samples)", "1 - R^2", "none", "median", lambda i: _curv(i, "logit", "side"), condition="window")
metric("bw_curved_share", NAME, "share of correct samples whose boundary-side curvedness exceeds window.curved_threshold",
       "fraction", "none", "share",
       lambda i: {f"{condition(i.cfg, 'side')} >{settings(i.cfg).curved_threshold:g}":
                  ((lambda v, ok: v[ok & np.isfinite(v)] > settings(i.cfg).curved_threshold)(
                      _col(i, "feat_side"), _col(i, "correct", bool)),)}, condition="window > threshold")
metric("bw_censored", NAME, "correct samples whose travel distance is censored (window unit set to eps_max)", "count",
       "none", "count", lambda i: {"": (_col(i, "censored", bool)[_col(i, "correct", bool)],)})
metric("spearman_bw_curvedness_travel", NAME, "Spearman(boundary-side curvedness, travel distance t) within the model "
       "(correct samples; the window no longer shares its edge with t)", "rho", "none", "spearman",
       lambda i: {condition(i.cfg, "side"): tuple(
           (lambda ok: (_col(i, "feat_side")[ok], np.where(_col(i, "censored", bool), np.inf, _col(i, "t"))[ok]))(
               _col(i, "correct", bool) & np.isfinite(_col(i, "feat_side"))))}, condition="window", leaderboard=True)
metric("spearman_bw_curvedness_underconf", NAME, "Spearman(boundary-side curvedness, correct - confidence) over all "
       "samples (misclassified ones in their predicted class's region)", "rho", "none", "spearman",
       lambda i: {condition(i.cfg, "side"): tuple(
           (lambda ok: (_col(i, "feat_side")[ok], (_col(i, "correct", bool).astype(float) - _col(i, "conf"))[ok]))(
               np.isfinite(_col(i, "feat_side"))))}, condition="window", leaderboard=True)
metric("partial_bw_curvedness_underconf_margin", NAME, "partial Spearman(boundary-side curvedness, correct - "
       "confidence | logit margin) over all samples: the relation beyond what the margin explains", "rho", "none",
       "partial_spearman",
       lambda i: {condition(i.cfg, "side"): tuple(
           (lambda ok: (_col(i, "feat_side")[ok], (_col(i, "correct", bool).astype(float) - _col(i, "conf"))[ok],
                        _col(i, "margin")[ok]))(np.isfinite(_col(i, "feat_side"))))}, condition="window")
