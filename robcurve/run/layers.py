"""The ``layers`` measurement: the layer profile of :func:`robcurve.layer_profile` in a run.

Where along the depth does curvature arise? For every sample the same trajectory x + ε d
(the run's direction d, shared with ``trajectory``) is followed through every block output
(ViT / Swin: separately after the attention branch, the residual after it, the MLP branch
and the block; CNNs: every stage block), then the penultimate features and the logits.

Config section ``layers`` (a plugin section, :class:`LayersCfg`)::

    layers: {T: null, E: null, region: null, max_samples: 64, chunk_size: 1024, modules: null}

``T``, ``E`` and ``region`` default to the ``trajectory`` section's, so the profile's
``features`` row is the run's headline curvedness at the same scale. ``max_samples`` limits
the (costly: 2–6 s per sample on 2 CPU cores at T = 201 for the zoo models) profile to the
run's first samples; the others are stored as not measured and counted.

Per-sample row (one per sample, written to the store)::

    {"measured": bool, "pred": int, "correct": bool, "unresolved": bool,
     "layer": {"000": {"name": "blocks.0.attn", "kind": "attn", "block": 0, "curvedness": 1 - R^2,
                       "angle": mean turning angle at the grid step (deg), "straightness": ...,
                       "total_turning": deg per unit eps}, "001": {...}, ...}}

keys ``"000"``, ``"001"`` … are the forward order (depth). The metrics that read these rows
(``layer_*``, registered in :mod:`robcurve.run.metrics`) and :func:`plot_layers` need only the
stored rows and the config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from robcurve.geometry import layer_profile
from robcurve.naming import grid_step
from robcurve.plots import new_figure
from robcurve.run.measures import Context, Measurement, direction
from robcurve.run.metrics import Inputs, metric
from robcurve.run.store import save_png

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

MEASURES = ("curvedness", "angle", "straightness", "total_turning")
_KEY = re.compile(r"layer\.(\d+)\.curvedness")


class LayersCfg(BaseModel):
    """Config section ``layers`` (all ε in L-inf pixel units; ``None`` = the trajectory section's value)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    T: int | None = Field(None, ge=11, le=100001, description="grid points in [-E, E] (default: trajectory.T)")
    E: float | None = Field(None, gt=0, le=1, description="half width of the eps interval (default: trajectory.E)")
    region: Literal["in-class", "full"] | None = Field(None, description="default: trajectory.region")
    max_samples: int | None = Field(None, ge=1, description="profile only the run's first samples (None: all)")
    chunk_size: int = Field(1024, ge=1, description="images per forward")
    modules: list[str] | None = Field(None, description="module names to hook instead of the default layers")


def settings(cfg: Any) -> dict[str, Any]:
    """The resolved layer-profile settings of a run config: T, E, step (eps units), region, ..."""
    s = cfg.section("layers") if hasattr(cfg, "section") else LayersCfg()
    t = cfg.trajectory
    T = s.T or t.T
    E = s.E or t.E
    return {"T": T, "E": E, "step": grid_step(T, E), "region": s.region or t.region, "max_samples": s.max_samples,
            "chunk_size": s.chunk_size, "modules": s.modules}


def scale_condition(cfg: Any) -> str:
    """The scale every layer number is measured at, as it appears in the metric conditions."""
    s = settings(cfg)
    return f"E={s['E']:g} step={s['step']:g} {s['region']}"


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def run_layers(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    """Measurement run function: the layer profile of the batch along the run's direction."""
    s = settings(ctx.cfg)
    n = len(y)
    k = n if s["max_samples"] is None else max(0, min(n, s["max_samples"] - start))
    rows: list[dict] = [{"measured": False} for _ in range(n)]
    if k == 0:
        return rows
    d = direction(ctx, start, x, y)
    prof = layer_profile(ctx.model, x[:k], d[:k], s["E"], T=s["T"], region=s["region"], chunk_size=s["chunk_size"],
                         modules=s["modules"], clamp=ctx.cfg.direction.clamp, y=y[:k])
    width = max(3, len(str(len(prof.layers) - 1)))
    yc = y[:k].cpu()
    for i in range(k):
        layer = {}
        for li, spec in enumerate(prof.layers):
            layer[f"{li:0{width}d}"] = {
                "name": spec.name, "kind": spec.kind, "block": int(spec.block),
                "curvedness": _num(1 - prof.r2[li, i]), "angle": _num(prof.angle[li, i]),
                "straightness": _num(prof.straightness[li, i]), "total_turning": _num(prof.total_turning[li, i])}
        rows[i] = {"measured": True, "pred": int(prof.clean_pred[i]), "correct": bool(prof.clean_pred[i] == yc[i]),
                   "unresolved": bool(prof.unresolved[i]), "layer": layer}
    return rows


# -- reading the stored rows -----------------------------------------------------------------------
def layer_index(df: pd.DataFrame) -> list[tuple[str, str, str, int]]:
    """(key, name, kind, block) of every stored layer, in forward order (from the stored rows)."""
    out = []
    for c in df.columns:
        m = _KEY.fullmatch(c)
        if not m:
            continue
        key = m.group(1)
        names = df.get(f"layer.{key}.name")
        kinds = df.get(f"layer.{key}.kind")
        blocks = df.get(f"layer.{key}.block")
        first = names.first_valid_index() if names is not None else None
        if first is None:
            continue
        blk = pd.to_numeric(blocks, errors="coerce").loc[first] if blocks is not None else -1
        out.append((key, str(names.loc[first]), str(kinds.loc[first]), int(blk) if np.isfinite(blk) else -1))
    return sorted(out, key=lambda t: int(t[0]))


def _flag(df: pd.DataFrame, c: str) -> np.ndarray:
    return df[c].fillna(False).to_numpy(bool) if c in df else np.zeros(len(df), bool)


def valid(df: pd.DataFrame) -> np.ndarray:
    """Samples that enter layer statistics: profiled, correctly classified, region resolved."""
    return _flag(df, "measured") & _flag(df, "correct") & ~_flag(df, "unresolved")


def values(df: pd.DataFrame, key: str, measure: str = "curvedness") -> np.ndarray:
    c = f"layer.{key}.{measure}"
    if c not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[c], errors="coerce").to_numpy(float)


def kind_means(df: pd.DataFrame, measure: str = "curvedness") -> dict[str, np.ndarray]:
    """Per kind: each sample's mean of ``measure`` over the layers of that kind (NaN skipped)."""
    by: dict[str, list[np.ndarray]] = {}
    for key, _, kind, _ in layer_index(df):
        by.setdefault(kind, []).append(values(df, key, measure))
    out = {}
    for kind, arrs in by.items():
        a = np.vstack(arrs)
        cnt = np.isfinite(a).sum(0)
        out[kind] = np.where(cnt > 0, np.nansum(a, 0) / np.maximum(cnt, 1), np.nan)
    return out


def attn_minus_mlp(df: pd.DataFrame, measure: str = "curvedness") -> np.ndarray | None:
    """Per sample: mean over blocks of (attention-branch − MLP-branch) ``measure``; None without both branches."""
    idx = layer_index(df)
    attn = {blk: key for key, _, kind, blk in idx if kind == "attn"}
    mlp = {blk: key for key, _, kind, blk in idx if kind == "mlp"}
    blocks = sorted(set(attn) & set(mlp))
    if not blocks:
        return None
    a = np.vstack([values(df, attn[b], measure) - values(df, mlp[b], measure) for b in blocks])
    cnt = np.isfinite(a).sum(0)
    return np.where(cnt > 0, np.nansum(a, 0) / np.maximum(cnt, 1), np.nan)


# -- metric selectors (registered in robcurve.run.metrics) -------------------------------------------
def sel_layer(inp: Inputs, measure: str) -> dict[str, tuple[np.ndarray, ...]]:
    df = inp.frame("layers")
    ok = valid(df)
    sc = scale_condition(inp.cfg)
    return {f"{name} | {sc}": (values(df, key, measure)[ok],) for key, name, _, _ in layer_index(df)}


def sel_kind(inp: Inputs, measure: str = "curvedness") -> dict[str, tuple[np.ndarray, ...]]:
    df = inp.frame("layers")
    ok = valid(df)
    sc = scale_condition(inp.cfg)
    return {f"{kind} | {sc}": (v[ok],) for kind, v in kind_means(df, measure).items()}


def sel_attn_mlp(inp: Inputs) -> dict[str, tuple[np.ndarray, ...]]:
    df = inp.frame("layers")
    d = attn_minus_mlp(df)
    if d is None:
        return {}
    return {scale_condition(inp.cfg): (d[valid(df)],)}


def sel_unresolved(inp: Inputs) -> dict[str, tuple[np.ndarray, ...]]:
    df = inp.frame("layers")
    m = _flag(df, "measured") & _flag(df, "correct")
    unres = _flag(df, "unresolved")
    return {scale_condition(inp.cfg): (unres[m],)}


# -- plot ---------------------------------------------------------------------------------------------
KIND_STYLE = {"attn": ("tab:red", "o"), "attn_res": ("tab:orange", "."), "mlp": ("tab:blue", "s"),
              "block": ("tab:green", "D"), "features": ("black", "*"), "logits": ("tab:gray", "X"),
              "custom": ("tab:purple", "o")}


def draw_layers(df: pd.DataFrame, cfg: Any, title: str = "") -> Any:
    """The layer-profile figure from stored rows: median curvedness (IQR band) and mean turning angle per layer."""
    idx = layer_index(df)
    ok = valid(df)
    s = settings(cfg)
    fig, axes = new_figure(2, 1, figsize=(max(6.0, 0.32 * len(idx) + 2), 6.4), sharex=True)
    xs = np.arange(len(idx))
    for ax, measure, ylab in ((axes[0], "curvedness", "curvedness 1 − R²"),
                              (axes[1], "angle", f"turning angle at step {s['step']:g} (deg)")):
        med, q1, q3 = [], [], []
        for key, _, _, _ in idx:
            v = values(df, key, measure)[ok]
            v = v[np.isfinite(v)]
            med.append(np.median(v) if v.size else np.nan)
            q1.append(np.percentile(v, 25) if v.size else np.nan)
            q3.append(np.percentile(v, 75) if v.size else np.nan)
        ax.fill_between(xs, q1, q3, color="0.85", label="25–75%")
        ax.plot(xs, med, color="0.4", lw=0.8)
        for kind in dict.fromkeys(k for _, _, k, _ in idx):
            sel = [i for i, t in enumerate(idx) if t[2] == kind]
            c, mk = KIND_STYLE.get(kind, ("tab:purple", "o"))
            ax.scatter(xs[sel], np.asarray(med)[sel], color=c, marker=mk, s=28, zorder=3, label=kind)
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", ncol=4)
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels([t[1] for t in idx], rotation=90, fontsize=7)
    n = int(ok.sum())
    axes[0].set_title(f"{title or cfg.model}: layer profile (median over n={n}; E={s['E']:g}, step {s['step']:g}, "
                      f"{s['region']})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_layers(frames: Mapping[str, pd.DataFrame], cfg: Any, out_dir: str | Path) -> list[str]:
    """Summary hook: write ``layers.png`` (drawn from the stored rows only); return the file names written."""
    if "layers" not in frames or not layer_index(frames["layers"]):
        return []

    fig = draw_layers(frames["layers"], cfg)
    save_png(fig, Path(out_dir) / "layers.png")
    return ["layers.png"]


# -- registration: the measurement (a lazy entry of robcurve.run.measures) and its metrics ------------------
MEASUREMENT = Measurement("layers", run_layers, "layer profile: curvature at every block output (attention and MLP "
                          "branch separately)", 15, "layers", LayersCfg,
                          plot=lambda s, out: plot_layers(s["frames"], s["cfg"], out))

metric("layer_curvedness_median", "layers", "median curvedness 1 - R^2 at each layer (block, branch, "
       "features, logits)", "1 - R^2", "none", "median", lambda i: sel_layer(i, "curvedness"),
       condition="layer | scale")
metric("layer_angle_mean", "layers", "mean turning angle at the grid step at each layer", "deg", "none", "mean",
       lambda i: sel_layer(i, "angle"), condition="layer | scale")
metric("layer_kind_curvedness_median", "layers", "median over samples of the mean curvedness of the layers of "
       "one kind (attn, attn_res, mlp, block, features, logits)", "1 - R^2", "none", "median", sel_kind,
       condition="kind | scale")
metric("layer_attn_minus_mlp", "layers", "mean over samples of the per-block mean of attention-branch minus "
       "MLP-branch curvedness (> 0: attention branch more curved)", "1 - R^2", "none", "mean", sel_attn_mlp,
       condition="scale")
metric("layer_unresolved", "layers", "profiled correct samples whose in-class region has < 5 grid points",
       "count", "none", "count", sel_unresolved, condition="scale")
