"""Geometry plots (matplotlib, Agg canvas; pyplot's global state is never touched).

Every function draws into ``ax`` when given (and returns its figure), otherwise makes a new
figure on an Agg canvas; save it with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from robcurve.errors import RobcurveError
from robcurve.geometry.trajectory import Curvature, Trajectory, curvature


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (5.0, 4.0), layout: str | None = None,
               **subplot_kw: Any) -> tuple[Any, Any]:
    """A figure on its own Agg canvas and its axes (``Figure.subplots``: one axes, or an array); ``layout`` as
    matplotlib's (None: call ``fig.tight_layout()`` when drawn, which is cheaper than "constrained" for the
    run's figures). No pyplot: no global state and nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def _figure_and_axes(ax: Any, figsize: tuple[float, float] = (5.0, 4.0)) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    return new_figure(figsize=figsize, layout="constrained")


def _check_index(i: int, n: int, where: str) -> None:
    if not -n <= i < n:
        raise RobcurveError(f"sample index {i} out of range for {n} samples", where=where, fix=f"use 0 <= i < {n}")


def plot_trajectory_pca(traj: Trajectory, i: int, ax: Any = None, *, space: str = "features") -> Any:
    """Sample i's trajectory projected on its first two principal components, with the chord.

    Points are coloured by ε; ε = 0 is starred; grid points where the predicted class differs
    from the clean one are crossed; the dashed line is the straight chord from ε = −E to +E.

    Args:
        traj: a :class:`Trajectory`; i: sample index; space: ``"features"`` or ``"logits"``.
    Returns:
        the matplotlib Figure.
    """
    _check_index(i, traj.n, "plot_trajectory_pca")
    if space not in ("features", "logits"):
        raise RobcurveError(f"unknown space {space!r}", where="plot_trajectory_pca", fix="use 'features' or 'logits'")
    z = (traj.features if space == "features" else traj.logits)[i]
    pts, var = project_path(z)
    other = (traj.preds[i] != traj.clean_pred[i]).numpy()
    return draw_projection(pts, var, traj.eps.numpy(), other, ax=ax, title=f"sample {i}: {space}")


def project_path(z: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A (T, D) path on its first two principal components: ((T, 2) points, variance shares (2,))."""
    z = z.detach().cpu().to(torch.float64)
    zc = z - z.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(zc, full_matrices=False)
    k = min(2, vh.shape[0])
    p = (zc @ vh[:k].T).numpy()
    if k < 2:
        p = np.concatenate([p, np.zeros((p.shape[0], 2 - k))], 1)
    var = (s**2 / (s**2).sum().clamp_min(1e-300)).numpy()
    var = np.concatenate([var, np.zeros(2)])[:2]
    return p, var


def draw_projection(p: Any, var: Any, eps: Any, other: Any, ax: Any = None, title: str = "") -> Any:
    """Draw a projected path (points (T, 2), variance shares, ε per point, other-class mask)."""
    p, var, eps = np.asarray(p, dtype=float), np.asarray(var, dtype=float), np.asarray(eps, dtype=float)
    other = np.asarray(other, dtype=bool)
    fig, ax = _figure_and_axes(ax)
    ax.plot(p[:, 0], p[:, 1], color="0.6", lw=0.8, zorder=1)
    sc = ax.scatter(p[:, 0], p[:, 1], c=eps, cmap="coolwarm", s=10, zorder=2)
    ax.plot([p[0, 0], p[-1, 0]], [p[0, 1], p[-1, 1]], "k--", lw=1, label="chord", zorder=1)
    c = int(np.abs(eps).argmin())
    ax.scatter([p[c, 0]], [p[c, 1]], marker="*", s=120, color="k", label=f"ε = {eps[c]:.3g}", zorder=3)
    if other.any():
        ax.scatter(p[other, 0], p[other, 1], marker="x", s=18, color="k", label="other class", zorder=3)
    fig.colorbar(sc, ax=ax, label="ε")
    ax.set_xlabel(f"PC1 ({var[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({var[1] if var.size > 1 else 0:.0%})")
    ax.set_title(f"{title} along ε ∈ [{eps[0]:.3g}, {eps[-1]:.3g}]")
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_turning_angle(curv_or_traj: Curvature | Trajectory, i: int, ax: Any = None, *,
                       space: str = "features") -> Any:
    """Turning angle θ_t (degrees, at the grid step) against ε for sample i.

    A :class:`Trajectory` is measured first with ``curvature(traj, region="full")``. The
    in-class part (between the first label flips) is shaded.
    """
    c = curvature(curv_or_traj, region="full", ladder=(1,)) if isinstance(curv_or_traj, Trajectory) else curv_or_traj
    if not isinstance(c, Curvature):
        raise RobcurveError(f"expected a Trajectory or Curvature, got {type(c).__name__}", where="plot_turning_angle",
                            fix="pass the result of trajectory() or curvature()")
    n = int(c.clean_pred.numel())
    _check_index(i, n, "plot_turning_angle")
    if space not in ("features", "logits"):
        raise RobcurveError(f"unknown space {space!r}", where="plot_turning_angle", fix="use 'features' or 'logits'")
    sp = c.features if space == "features" else c.logits
    eps = c.eps.numpy()
    ang = sp.angles[i].numpy()
    fig, ax = _figure_and_axes(ax)
    lo, hi = int(c.region_lo[i]), int(c.region_hi[i])
    if hi >= lo:
        ax.axvspan(eps[lo], eps[hi], color="0.92", label="in-class part", zorder=0)
    ax.plot(eps, ang, ".-", ms=3, lw=0.8, label=f"θ at step {c.step:.3g}")
    ax.axvline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("ε (units of d; L∞ pixels for sign directions)")
    ax.set_ylabel("turning angle θ (degrees)")
    ax.set_title(f"sample {i}, {space}: mean θ {np.nanmean(ang) if np.isfinite(ang).any() else float('nan'):.3g}°")
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_curvature_hist(values: Mapping[str, Sequence[float] | np.ndarray | torch.Tensor], ax: Any = None, *,
                        bins: int | Sequence[float] = 30, xlabel: str = "curvedness 1 − R²",
                        threshold: float | None = None, density: bool = False) -> Any:
    """Histograms of a per-sample curvature measure, one per model: ``{model_name: values}``.

    NaN values (unresolved or censored samples) are left out of the histogram and counted in
    the legend. ``threshold`` draws the "curved" threshold. Bins are shared by all models.
    """
    if not values:
        raise RobcurveError("no values to plot", where="plot_curvature_hist", fix="pass {model_name: values}")
    arrays = {k: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=float).ravel()
              for k, v in values.items()}
    finite = [a[np.isfinite(a)] for a in arrays.values()]
    allv = np.concatenate(finite) if finite else np.empty(0)
    if isinstance(bins, int):
        lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-9
        edges = np.linspace(lo, hi, bins + 1)
    else:
        edges = np.asarray(bins, dtype=float)
    fig, ax = _figure_and_axes(ax)
    for name, a in arrays.items():
        ok = np.isfinite(a)
        med = float(np.median(a[ok])) if ok.any() else float("nan")
        ax.hist(a[ok], bins=edges, histtype="step", lw=1.5, density=density,
                label=f"{name} (n={int(ok.sum())}, NaN={int((~ok).sum())}, median {med:.3g})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density" if density else "samples")
    ax.legend(loc="best", fontsize="small")
    return fig
