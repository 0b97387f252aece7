"""Adaptive jump-out (METHOD.md §4, the test of finding 3): a jump that is checked to leave the curved region.

A fixed jump does not ensure the sample leaves the curved region (measured: a random 2/255 jump
leaves curvedness nearly unchanged). Here, per correct sample with boundary-relative curvedness
c0 (``window`` measurement) and travel distance t0:

1. **Search.** For η on a ladder up to a cap and for jump kinds in a fixed order (``random``
   signs, ``orthogonal`` to d, ``normal``: the change of the loss-gradient sign direction between x
   and x + (t0/2)·d, made orthogonal to d: where the path's direction of steepest ascent turns),
   x' = clamp(x + η u): keep the first (smallest η, then kind order) after which the label is
   kept and the boundary-relative curvedness at x' (direction d' recomputed at x', travel t'
   along it, the same window rule) is at most the curved threshold. Record η*, kind, t', c'.
   A curved sample that no jump within the cap straightens is counted as "could not jump out".
2. **Shortcut ratio** = (η* + t') / t0 (L∞ units: sign directions, so ε is an L∞ distance).
3. **Controls.** (a) The null jump: for each jumped-out sample, a jump of the same size η* in
   seeded random directions that does *not* straighten it (the first of up to 4 draws with
   c' above the threshold and the label kept), and its shortcut ratio. (b) Straight samples
   (c0 at most the threshold) get the jump of the ladder's first size along ``random``: their
   ratio is what a jump does where there is no curved region to leave.
The paper predicts ratio < 1 for curved samples far more often than for the controls;
robcurve measures it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from robcurve.geometry.window import window_curvature
from robcurve.models.wrapper import as_robmodel

KINDS = ("random", "orthogonal", "normal")


def _unit_sign(v: Tensor) -> Tensor:
    s = torch.sign(v)
    return torch.where(s == 0, torch.ones_like(s), s)


def jump_directions(model: torch.nn.Module, x: Tensor, y: Tensor, d: Tensor, t0: Tensor, kind: str, seed: int,
                    direction_fn) -> Tensor:
    """Sign directions u (‖u‖∞ = 1) of one jump kind for the samples x (N, C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return _unit_sign(torch.randn(x.shape, generator=g)).to(x.device, x.dtype)
    if kind == "orthogonal":
        r = torch.randn(x.shape, generator=g).to(x.device, x.dtype).flatten(1)
        df = d.flatten(1)
        r = r - (r * df).sum(1, keepdim=True) / (df * df).sum(1, keepdim=True).clamp_min(1e-12) * df
        return _unit_sign(r).view_as(x)
    if kind == "normal":
        mid = x + (t0 / 2).view(-1, *[1] * (x.dim() - 1)).to(x.dtype) * d
        dm = direction_fn(mid, y).flatten(1)
        df = d.flatten(1)
        turn = dm - df
        turn = turn - (turn * df).sum(1, keepdim=True) / (df * df).sum(1, keepdim=True).clamp_min(1e-12) * df
        rnd = _unit_sign(torch.randn(x.shape, generator=g)).to(x.device, x.dtype).flatten(1)
        turn = torch.where(turn.abs().sum(1, keepdim=True) > 0, turn, rnd)  # no turn: a random sign direction
        return _unit_sign(turn).view_as(x)
    raise ValueError(f"unknown jump kind {kind!r}")


@dataclass
class AdaptiveJump:
    """Per sample (N,): the search result and both controls; NaN where not applicable."""

    curved: Tensor  # bool: c0 > threshold
    jumped: Tensor  # bool: a jump within the cap straightened it (curved samples) / was applied (straight ones)
    eta: Tensor  # η* (L∞)
    kind: list[str]
    t_after: Tensor
    c_after: Tensor
    ratio: Tensor  # (η* + t') / t0
    null_ratio: Tensor  # the null jump's ratio (jumped-out curved samples)
    null_c_after: Tensor


@torch.no_grad()
def _after(model, x_j: Tensor, y: Tensor, direction_fn, travel_fn, points: int, fraction: float, chunk: int
           ) -> tuple[Tensor, Tensor, Tensor]:
    """(label kept, t', c') at jumped points x_j."""
    rob = as_robmodel(model)
    pred = torch.cat([rob(x_j[s : s + 512]).argmax(1) for s in range(0, len(x_j), 512)])
    kept = pred == y
    with torch.enable_grad():
        d_new = direction_fn(x_j, y)
    t, cens = travel_fn(x_j, y, d_new)
    w = window_curvature(model, x_j, d_new, t, cens, points=points, fraction=fraction, chunk=chunk)
    return kept.cpu(), t.cpu(), w.feat_side.cpu()


def adaptive_jump(model: torch.nn.Module, x: Tensor, y: Tensor, d: Tensor, t0: Tensor, c0: Tensor, *,
                  direction_fn, travel_fn, threshold: float, etas: Sequence[float], seed: int, points: int = 41,
                  fraction: float = 1.0, chunk: int = 2048, null_draws: int = 4) -> AdaptiveJump:
    """The adaptive jump-out search and its controls for correct samples x (see the module docstring).

    ``direction_fn(x, y) -> d`` is the run's direction rule; ``travel_fn(x, y, d) -> (t, censored)``
    its travel search (censored t = ε_max); ``c0`` the boundary-side curvedness at x.
    """
    n = x.shape[0]
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    curved = (c0 > threshold).cpu()
    jumped = torch.zeros(n, dtype=torch.bool)
    eta, t_after, c_after = nan.clone(), nan.clone(), nan.clone()
    kind = [""] * n
    t0c = t0.cpu().double()
    todo = curved.clone()
    for e in etas:
        for ki, k in enumerate(KINDS):
            idx = torch.nonzero(todo & ~jumped).flatten()
            if len(idx) == 0:
                break
            i_dev = idx.to(x.device)
            u = jump_directions(model, x[i_dev], y[i_dev], d[i_dev], t0[i_dev], k, seed + 1000 * ki + int(e * 1e6),
                                direction_fn)
            xj = (x[i_dev] + e * u).clamp(0, 1)
            kept, t, c = _after(model, xj, y[i_dev], direction_fn, travel_fn, points, fraction, chunk)
            ok = kept & torch.isfinite(c) & (c <= threshold)
            for j in torch.nonzero(ok).flatten().tolist():
                s = int(idx[j])
                jumped[s], eta[s], t_after[s], c_after[s], kind[s] = True, e, float(t[j]), float(c[j]), k
    # control (b): straight samples get the ladder's first jump along random signs
    straight = torch.nonzero(~curved).flatten()
    if len(straight):
        i_dev = straight.to(x.device)
        u = jump_directions(model, x[i_dev], y[i_dev], d[i_dev], t0[i_dev], "random", seed + 7, direction_fn)
        xj = (x[i_dev] + etas[0] * u).clamp(0, 1)
        kept, t, c = _after(model, xj, y[i_dev], direction_fn, travel_fn, points, fraction, chunk)
        for j, s in enumerate(straight.tolist()):
            if bool(kept[j]):
                jumped[s], eta[s], t_after[s], c_after[s], kind[s] = True, etas[0], float(t[j]), float(c[j]), "random"
    ratio = (eta + t_after) / t0c
    # control (a): null jumps of size η* that do not straighten
    null_ratio, null_c = nan.clone(), nan.clone()
    pending = torch.nonzero(curved & jumped).flatten()
    for draw in range(null_draws):
        if len(pending) == 0:
            break
        i_dev = pending.to(x.device)
        u = jump_directions(model, x[i_dev], y[i_dev], d[i_dev], t0[i_dev], "random", seed + 99_991 * (draw + 1),
                            direction_fn)
        e = eta[pending].to(x.device, x.dtype).view(-1, *[1] * (x.dim() - 1))
        xj = (x[i_dev] + e * u).clamp(0, 1)
        kept, t, c = _after(model, xj, y[i_dev], direction_fn, travel_fn, points, fraction, chunk)
        ok = kept & torch.isfinite(c) & (c > threshold)
        done = []
        for j in torch.nonzero(ok).flatten().tolist():
            s = int(pending[j])
            null_ratio[s] = (float(eta[s]) + float(t[j])) / float(t0c[s])
            null_c[s] = float(c[j])
            done.append(s)
        pending = torch.tensor([int(s) for s in pending.tolist() if s not in set(done)], dtype=torch.long)
    return AdaptiveJump(curved, jumped, eta, kind, t_after, c_after, ratio, null_ratio, null_c)
