"""Measurement ``ablation``: what causes the curvature (METHOD.md §8), in one module.

On the boundary-relative windows of the ``window`` measurement (the same d, t and points, reused
from the batch's shared window pass), the curvature is measured again with a nonlinearity frozen
at its value at ε = 0: ``attention`` (every softmax attention map of a ViT / Swin) and ``gates``
(every ReLU / GELU gate and max-pool choice; the control, and in a Transformer the MLPs'
gates to set beside attention). Per sample: frozen curvedness and the ratio frozen / unfrozen
(1 − ratio: the share of the curvature that the frozen nonlinearity's response causes).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from robcurve.geometry.ablation import ablation_curvature, has_attention, has_gates
from robcurve.run.measurements.window import measured_prefix, window_pass
from robcurve.run.measurements.window import settings as window_settings
from robcurve.run.measures import Context, Measurement
from robcurve.run.metrics import Inputs, metric

NAME = "ablation"
KINDS = ("attention", "gates")


class AblationCfg(BaseModel):
    """Config section ``ablation``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    max_samples: int | None = Field(100, ge=1, description="ablate only the run's first samples (None: all)")


def run_ablation(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    n = len(y)
    k = measured_prefix(n, start, ctx.cfg.section(NAME).max_samples)
    rows: list[dict] = [{"measured": False} for _ in range(n)]
    if k == 0:
        return rows
    wp = window_pass(ctx, start, x, y)
    s = window_settings(ctx.cfg)
    w = wp["w"]
    present = {"attention": has_attention(ctx.model), "gates": has_gates(ctx.model)}
    frozen = {}
    for kind in KINDS:
        if present[kind]:
            frozen[kind] = ablation_curvature(ctx.model, x[:k], wp["d"][:k], wp["t"][:k], wp["censored"][:k], kind,
                                              points=s.points, fraction=s.fraction, clamp=ctx.cfg.direction.clamp,
                                              chunk=s.chunk_size)

    def num(v: float) -> float | None:
        return float(v) if math.isfinite(float(v)) else None

    for i in range(k):
        r: dict = {"measured": True, "correct": bool(wp["correct"][i]), "side": num(w.feat_side[i]), "sym": num(w.feat_sym[i])}
        for kind, f in frozen.items():
            r[f"{kind}_side"], r[f"{kind}_sym"] = num(f.feat_side[i]), num(f.feat_sym[i])
        rows[i] = r
    return rows


MEASUREMENT = Measurement(NAME, run_ablation, "curvature with attention maps (or ReLU/GELU gates) frozen at "
                          "eps = 0 on the boundary-relative windows: what causes the curvature", 27, NAME,
                          AblationCfg)


def _ratio(i: Inputs, kind: str, side: str) -> dict:
    df = i.frame(NAME)
    if f"{kind}_{side}" not in df.columns:
        return {}
    ok = i.col(NAME, "measured", bool) & i.col(NAME, "correct", bool)
    fz, free = i.col(NAME, f"{kind}_{side}"), i.col(NAME, side)
    keep = ok & np.isfinite(fz) & np.isfinite(free) & (free > 0)
    win = "boundary side [0, t]" if side == "side" else "symmetric [-t, t]"
    return {f"{kind} frozen | {win}": ((fz / np.where(free > 0, free, np.nan))[keep],)}


for _kind in KINDS:
    for _side in ("side", "sym"):
        metric(f"ablation_{_kind}_{'' if _side == 'side' else 'sym_'}ratio_median", NAME,
               f"median per-sample ratio of curvedness with the {_kind} frozen at eps = 0 to the unfrozen curvedness "
               f"({'boundary-side' if _side == 'side' else 'symmetric'} window; 1 - ratio: the share the {_kind}' "
               "response causes)", "ratio", "none", "median", lambda i, k=_kind, s=_side: _ratio(i, k, s),
               condition="frozen | window", leaderboard=_side == "side")
