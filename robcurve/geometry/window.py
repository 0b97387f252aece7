"""Curvature on a window scaled to each sample's own travel distance (METHOD.md §2, boundary-relative).

A fixed window [−E, E] sits at a different place relative to each sample's decision boundary
(on the zoo only 9–28% of a standard model's in-class window lies on the boundary side, about
half for an adversarially trained one), so curvedness over it partly measures where the
boundary is. Here each sample i gets its own grid of ``points`` inputs along its direction d_i:

- boundary side: ε_ij = f · t_i · j / (P − 1),        j = 0 … P − 1   (from x to f·t_i)
- symmetric:     ε_ij = f · t_i · (2 j / (P − 1) − 1)                 (from −f·t_i to f·t_i)

where t_i is the travel distance to the first label flip of the sample's *region* label (the
true label for correct samples, the predicted one for misclassified samples) and f the
fraction (default 1). A censored sample (no flip by ε_max) uses t_i = ε_max and is counted.
Every sample and model is then compared at the same position relative to its own boundary,
with the same number of points. The curvedness 1 − R² of the affine fit z ≈ a + ε b does not
depend on how ε is scaled, so t enters only through which part of the path the window covers:
for every sample the part that ends at (boundary side) or is centred between its boundaries
(symmetric) its own decision boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from robcurve.errors import RobcurveError
from robcurve.models.wrapper import as_robmodel


def window_grid(t: Tensor, points: int, fraction: float = 1.0, side: str = "boundary") -> Tensor:
    """Per-sample ε grids (N, points): ``boundary`` [0, f t] or ``symmetric`` [−f t, f t]."""
    if points < 3:
        raise RobcurveError(f"a window needs at least 3 points, got {points}", fix="use e.g. points=41")
    if not fraction > 0:
        raise RobcurveError(f"the window fraction must be > 0, got {fraction}", fix="use e.g. fraction=1.0")
    u = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    if side == "symmetric":
        u = 2 * u - 1
    elif side != "boundary":
        raise RobcurveError(f"unknown window side {side!r}", fix="use boundary or symmetric")
    return (fraction * t.double())[:, None] * u[None, :]


def affine_r2(z: Tensor, eps: Tensor) -> Tensor:
    """R² of the best affine fit z ≈ a + ε b per sample: z (N, P, D), eps (N, P) -> (N,).

    The share of the variance of z over the window (summed over dimensions) that the fit
    explains; NaN where z does not move. Computed in float64.
    """
    z, eps = z.double(), eps.double()
    zc = z - z.mean(1, keepdim=True)
    ec = eps - eps.mean(1, keepdim=True)
    den = (ec**2).sum(1)
    b = torch.einsum("np,npd->nd", ec, zc) / den.clamp_min(1e-300)[:, None]
    resid = zc - ec[:, :, None] * b[:, None, :]
    tot = (zc**2).sum((1, 2))
    r2 = 1 - (resid**2).sum((1, 2)) / tot.clamp_min(1e-300)
    return torch.where((tot > 0) & (den > 0), r2, torch.full_like(r2, float("nan")))


@dataclass
class WindowCurvature:
    """Per-sample curvedness (1 − R²) on the boundary-side and symmetric windows, penultimate and logits."""

    t: Tensor  # (N,) the window's unit: travel distance of the region label (eps_max when censored)
    censored: Tensor  # (N,) bool
    feat_side: Tensor
    feat_sym: Tensor
    logit_side: Tensor
    logit_sym: Tensor
    points: int
    fraction: float


@torch.no_grad()
def window_curvature(model: torch.nn.Module, x: Tensor, d: Tensor, t: Tensor, censored: Tensor, *,
                     points: int = 41, fraction: float = 1.0, clamp: bool = False, chunk: int = 2048,
                     on_chunk: Callable[[Tensor], None] | None = None) -> WindowCurvature:
    """Curvedness of features and logits on each sample's boundary-relative windows.

    Args:
        x: images (N, C, H, W) in [0, 1]; d: directions like x.
        t: per-sample travel distance (N,) in ε units; censored samples carry eps_max.
        points: grid points per window (the same for every sample); fraction: f of t.
        chunk: inputs per forward.
        on_chunk: called before each forward with the sample index of each of its rows (the
            attention ablation replays each sample's frozen maps on its own rows).
    """
    rob = as_robmodel(model)
    n = x.shape[0]
    out = {}
    for side in ("boundary", "symmetric"):
        eps = window_grid(t.cpu(), points, fraction, side)  # (N, P), float64
        flat_eps = eps.reshape(-1).to(x.device, x.dtype)
        xi = x.repeat_interleave(points, 0)
        di = d.repeat_interleave(points, 0)
        feats, logits = [], []
        for s in range(0, len(xi), chunk):
            inp = xi[s : s + chunk] + flat_eps[s : s + chunk].view(-1, *([1] * (x.dim() - 1))) * di[s : s + chunk]
            if clamp:
                inp = inp.clamp(0, 1)
            if on_chunk is not None:
                on_chunk(torch.arange(s, s + len(inp)) // points)
            lg, ft = rob.logits_and_features(inp)
            feats.append(ft.double().cpu())
            logits.append(lg.double().cpu())
        z = torch.cat(feats).view(n, points, -1)
        lo = torch.cat(logits).view(n, points, -1)
        out[side] = (1 - affine_r2(z, eps), 1 - affine_r2(lo, eps))
    return WindowCurvature(t.cpu(), censored.cpu(), out["boundary"][0], out["symmetric"][0], out["boundary"][1],
                           out["symmetric"][1], points, fraction)
