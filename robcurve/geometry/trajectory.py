"""Trajectories z(x + ε d) and their curvature (METHOD.md §2).

Units: images in [0, 1] pixel units; ε multiplies the direction d (for sign directions,
‖d‖∞ = 1, so ε is a per-pixel L∞ step); angles in degrees; total turning in degrees per
unit ε. Every curvature number carries its scale: the grid step h₀, the ladder of steps
h₀·k, the intervals [−Eᵢ, Eᵢ] and the region are stored with the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robcurve.errors import RobcurveError
from robcurve.geometry.directions import check_direction, check_images
from robcurve.memory import (
    AUTO_CANDIDATES,
    CHUNK_CACHE,
    ChunkChoice,
    ChunkSize,
    ChunkTuner,
    budget_bytes,
    cached_chunk_size,
    check_chunk,
    chunk_key,
    memory_cap,
    memory_per_image,
    sync_device,
)
from robcurve.models.wrapper import FeaturesFn, RobcurveModel, as_robmodel
from robcurve.naming import grid_step

REGIONS = ("in-class", "full")
MIN_REGION_POINTS = 5


# -- grids and batched forwards -------------------------------------------------------------
def eps_grid(T: int = 201, E: float = 0.1) -> Tensor:
    """T equally spaced ε in [−E, E], float64, exactly symmetric (ε = 0 is a point for odd T)."""
    if T < 1 or not (E > 0):
        raise RobcurveError(f"bad grid T={T}, E={E}", where="trajectory", fix="use T >= 3 and E > 0")
    if T == 1:
        return torch.zeros(1, dtype=torch.float64)
    return (torch.arange(T, dtype=torch.float64) - (T - 1) / 2) * grid_step(T, E)


def _as_grid(eps: Tensor | Sequence[float] | None, T: int, E: float, where: str) -> Tensor:
    if eps is None:
        return eps_grid(T, E)
    g = torch.as_tensor(eps, dtype=torch.float64).flatten().cpu()
    if g.numel() == 0 or not torch.isfinite(g).all():
        raise RobcurveError("ε grid is empty or not finite", where=where, fix="pass a 1-D increasing sequence of ε")
    if g.numel() > 1 and not (g.diff() > 0).all():
        raise RobcurveError("ε grid must be strictly increasing", where=where, fix="sort the grid, e.g. torch.linspace(-E, E, T)")
    return g


def grid_inputs(x: Tensor, d: Tensor, eps: Tensor, start: int, stop: int, clamp: bool = False) -> Tensor:
    """Images x_i + ε_t d_i for flat indices start..stop−1 of the (N, T) grid (i-major)."""
    T = eps.numel()
    idx = torch.arange(start, stop, device=x.device)
    i, t = idx // T, idx % T
    e = eps.to(device=x.device, dtype=x.dtype)[t].view(-1, *([1] * (x.dim() - 1)))
    inp = torch.addcmul(x[i], e, d[i])
    return inp.clamp_(0.0, 1.0) if clamp else inp


def predict(model: RobcurveModel, x: Tensor, chunk_size: ChunkSize = None) -> Tensor:
    """argmax f(x) for images x (N, C, H, W), in chunks, under no_grad; (N,) long on x's device.

    ``chunk_size``: images per forward; None or "auto": the measured size cached for this
    model and input (:func:`cached_chunk_size`), else the memory cap.
    """
    if chunk_size is None or chunk_size == "auto":
        chunk_size = cached_chunk_size(model, x) if x.shape[0] else 1
    chunk = check_chunk(chunk_size, "predict")  # type: ignore[arg-type]
    with torch.no_grad():
        return torch.cat([model(x[a:a + chunk]).argmax(-1) for a in range(0, x.shape[0], chunk)])


def centre_index(eps: Tensor) -> int:
    """Index of the grid point nearest ε = 0."""
    return int(eps.abs().argmin())


def has_exact_zero(eps: Tensor) -> bool:
    c = centre_index(eps)
    scale = float(eps.abs().max()) if eps.numel() > 1 else 1.0
    return abs(float(eps[c])) <= 1e-9 * max(scale, 1e-300)


# -- Trajectory --------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """Outputs along x + ε d for N images over one ε grid.

    Attributes:
        eps: (T,) float64 grid of ε (multiplies d; L∞ pixel units for sign directions).
        features: (N, T, D) penultimate features z(x_i + ε_t d_i), on the CPU.
        logits: (N, T, K) logits at the same points, on the CPU.
        clean_pred: (N,) argmax f(x) at ε = 0 (taken from the grid when it holds ε = 0).
        labels: (N,) true labels, or None when not given.
        clamp: whether inputs were clamped to [0, 1] (default False: clamping fakes curvature).
        chunk_size: images per forward used (after the automatic choice, the chosen size).
        meta: ``chunks``: the batch size of every forward in order (a raw forward of the same
            inputs in the same batches gives exactly these outputs); ``chunk_mode``: "auto" or
            "explicit"; ``chunk_choice``: the measured choice (:class:`ChunkChoice`) when auto.
    """

    eps: Tensor
    features: Tensor
    logits: Tensor
    clean_pred: Tensor
    labels: Tensor | None = None
    clamp: bool = False
    chunk_size: int = 4096
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def T(self) -> int:
        return int(self.eps.numel())

    @property
    def E(self) -> float:
        """Half-width of the grid: max |ε|."""
        return float(self.eps.abs().max())

    @property
    def step(self) -> float:
        """Grid step h₀ (the median step; see :attr:`uniform`)."""
        return float(self.eps.diff().median()) if self.T > 1 else float("nan")

    @property
    def uniform(self) -> bool:
        if self.T < 3:
            return True
        dif = self.eps.diff()
        return bool((dif - self.step).abs().max() <= 1e-6 * self.step)

    @property
    def preds(self) -> Tensor:
        """(N, T) predicted class along the trajectory."""
        return self.logits.argmax(-1)

    @property
    def correct(self) -> Tensor | None:
        """(N,) clean prediction == label, or None without labels."""
        return None if self.labels is None else self.clean_pred == self.labels

    def select(self, idx: Tensor | slice | Sequence[int]) -> Trajectory:
        """The trajectories of a subset of samples."""
        return Trajectory(self.eps, self.features[idx], self.logits[idx], self.clean_pred[idx],
                          None if self.labels is None else self.labels[idx], self.clamp, self.chunk_size, dict(self.meta))


def trajectory(model: nn.Module, x: Tensor, direction: Tensor, eps: Tensor | Sequence[float] | None = None, *,
               T: int = 201, E: float = 0.1, clamp: bool = False, features_fn: FeaturesFn | None = None,
               chunk_size: ChunkSize = None, y: Tensor | None = None,
               memory_budget: int | None = None) -> Trajectory:
    """Penultimate features and logits along x + ε d for every ε of a grid.

    The N·T inputs are built chunk by chunk (at most one chunk of images in memory at once)
    and run through the model in batched forwards under ``torch.no_grad()``; only the outputs
    (N·T·(D + K) numbers) are kept, on the CPU. Every output is exactly the model's forward of
    its input in the batch it ran in (``meta["chunks"]`` lists the batch sizes in order).

    Args:
        model: module mapping images in [0, 1] to logits; wrapped with
            ``as_robmodel(model, features_fn)``.
        x: images (N, C, H, W) in [0, 1] pixel units.
        direction: d, (N, C, H, W) (or (C, H, W), shared); see :mod:`robcurve.geometry.directions`.
        eps: increasing 1-D grid of ε; default ``T`` points equally spaced in [−E, E].
        T, E: the default grid (201 points, E = 0.1: step h₀ = 1e-3).
        clamp: clamp every input to [0, 1] (off by default: it bends the path in input space).
        features_fn: ``(net, x_normalised) -> (logits, features)`` for models without timm's API.
        chunk_size: images per forward. None or ``"auto"`` (default): chosen by measurement on
            first use per (model, device, dtype, input size, thread count) and cached in this
            process: powers of two within the memory budget are timed on the trajectory's own
            chunks (no extra forwards) and the fastest is kept (``meta["chunk_choice"]``).
        y: true labels (N,), stored (used for ``correct``).
        memory_budget: bound (bytes) on the estimated working memory of one chunk
            (:func:`memory_per_image`): bytes or text such as ``"512MiB"``; default the process
            budget of :mod:`robcurve.memory` (``--max-memory``, else 25% of the free memory).
            An explicit ``chunk_size`` larger than the budget allows is lowered to fit.

    Returns:
        :class:`Trajectory` with features (N, T, D), logits (N, T, K).
    """
    rob = as_robmodel(model, features_fn)
    x = check_images(x, "trajectory").to(rob.device)
    d = check_direction(x, direction, "trajectory(direction=...)")
    grid = _as_grid(eps, T, E, "trajectory")
    n, t_len = x.shape[0], grid.numel()
    total = n * t_len
    if total == 0:
        raise RobcurveError("no images to run", where="trajectory", fix="pass at least one image")
    auto = chunk_size is None or chunk_size == "auto"
    budget = budget_bytes(x.device, memory_budget)  # refuses sizes below one byte
    tuner: ChunkTuner | None = None
    choice: ChunkChoice | None = None
    if auto:
        key = chunk_key(rob, x, budget)
        choice = CHUNK_CACHE.get(rob.net, {}).get(key)
        if choice is None:
            cap = memory_cap(rob, x, budget)
            tuner = ChunkTuner(cap)
            chunk = min(cap, AUTO_CANDIDATES[-1])
        else:
            chunk = choice.size
    else:
        chunk = min(check_chunk(chunk_size, "trajectory"), memory_cap(rob, x, budget))  # type: ignore[arg-type]
    feats: Tensor | None = None
    logits: Tensor | None = None
    sizes: list[int] = []
    a = 0
    with torch.no_grad():
        while a < total:
            timing = None
            if tuner is not None:
                timing = tuner.next_size()
                if timing is None or a + timing > total:  # search over, or too little work left to time it
                    chunk = tuner.best if tuner.rates else chunk
                    if timing is None:
                        choice = ChunkChoice(chunk, dict(tuner.rates), memory_per_image(rob, x), memory_cap(rob, x, budget),
                                             budget, True)
                        CHUNK_CACHE.setdefault(rob.net, {})[chunk_key(rob, x, budget)] = choice
                    else:
                        choice = ChunkChoice(chunk, dict(tuner.rates), memory_per_image(rob, x),
                                             memory_cap(rob, x, budget), budget, False)
                    tuner, timing = None, None
            b = min(a + (timing or chunk), total)
            if timing:
                sync_device(x.device)
                t0 = time.perf_counter()
            lg, ft = rob.logits_and_features(grid_inputs(x, d, grid, a, b, clamp))
            ft = ft.reshape(b - a, -1)
            if feats is None or logits is None:
                feats = torch.empty(total, ft.shape[1], dtype=ft.dtype)
                logits = torch.empty(total, lg.shape[1], dtype=lg.dtype)
            feats[a:b] = ft.detach().cpu()
            logits[a:b] = lg.detach().cpu()
            if timing and tuner is not None:
                sync_device(x.device)
                tuner.record(timing, time.perf_counter() - t0)
            sizes.append(b - a)
            a = b
    if tuner is not None:  # the work ran out during the search: use the best so far, cache nothing
        chunk = tuner.best if tuner.rates else chunk
        choice = ChunkChoice(chunk, dict(tuner.rates), memory_per_image(rob, x), memory_cap(rob, x, budget), budget, False)
    assert feats is not None and logits is not None
    feats = feats.view(n, t_len, -1)
    logits = logits.view(n, t_len, -1)
    if has_exact_zero(grid):
        clean = logits[:, centre_index(grid)].argmax(-1)
    else:
        clean = predict(rob, x, chunk).cpu()
    labels = None if y is None else torch.as_tensor(y).long().view(-1).cpu()
    if labels is not None and labels.numel() != n:
        raise RobcurveError(f"y has {labels.numel()} labels for {n} images", where="trajectory", fix="pass one label per image")
    meta: dict[str, Any] = {"chunks": sizes, "chunk_mode": "auto" if auto else "explicit"}
    if choice is not None:
        meta["chunk_choice"] = choice.to_dict()
    return Trajectory(grid, feats, logits, clean, labels, bool(clamp), chunk, meta)


# -- measures ------------------------------------------------------------------------------------
def angle_deg(a: Tensor, b: Tensor, zero_tol: float = 0.0) -> Tensor:
    """Angle in degrees between vectors a and b (last dim), stable at 0° and 180°.

    NaN where either vector has norm <= zero_tol.
    """
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-300), b / nb.clamp_min(1e-300)
    th = 2 * torch.atan2((ua - ub).norm(dim=-1), (ua + ub).norm(dim=-1))
    bad = (na.squeeze(-1) <= zero_tol) | (nb.squeeze(-1) <= zero_tol)
    return torch.where(bad, torch.full_like(th, float("nan")), torch.rad2deg(th))


def in_class_region(preds: Tensor, clean_pred: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Grid indices [lo, hi] between the first label flips on either side of ε = 0.

    Args:
        preds: (N, T) predicted classes along the grid; clean_pred: (N,) class at ε = 0.
    Returns:
        lo, hi: (N,) long, inclusive (hi < lo when empty); flip_lo, flip_hi: (N,) float64 ε of
        the first grid point with another class below / above 0 (NaN: no flip on the grid).
    """
    n, t_len = preds.shape
    same = preds == clean_pred.view(-1, 1)
    p = int(torch.searchsorted(eps, torch.tensor(0.0, dtype=eps.dtype) - 1e-12 * max(float(eps.abs().max()), 1e-300)))
    right = ~same[:, p:]
    has_r = right.any(1)
    first_r = torch.where(has_r, right.int().argmax(1), torch.full((n,), t_len - p))
    hi = p + first_r - 1
    left = (~same[:, :p]).flip(1)
    has_l = left.any(1) if p > 0 else torch.zeros(n, dtype=torch.bool)
    first_l = torch.where(has_l, left.int().argmax(1) if p > 0 else torch.zeros(n, dtype=torch.long),
                          torch.full((n,), p))
    lo = p - first_l
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    flip_hi = torch.where(has_r, eps[(p + first_r).clamp_max(t_len - 1)], nan)
    flip_lo = torch.where(has_l, eps[(p - 1 - first_l).clamp_min(0)], nan)
    return lo, hi, flip_lo, flip_hi


def _masked_first_last(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """First and last True index per row of a (N, T) mask and whether any is True."""
    t_len = mask.shape[1]
    ar = torch.arange(t_len)
    anyv = mask.any(1)
    first = torch.where(mask, ar, t_len).amin(1).clamp_max(t_len - 1)
    last = torch.where(mask, ar, -1).amax(1).clamp_min(0)
    return first, last, anyv


def space_measures(z: Tensor, eps: Tensor, mask: Tensor, *, ladder: Sequence[int], intervals: Sequence[float],
                   delta_k: int | None, min_points: int = MIN_REGION_POINTS, zero_tol: float = 0.0) -> dict[str, Tensor]:
    """All curvature measures of trajectories z (N, T, F) over the grid points where mask (N, T).

    The mask must be contiguous per row (a region). Computed in float64. Returns a dict of
    tensors: ``angles`` (N, T) fine turning angle per grid point (NaN at the ends and next
    to zero-length steps; not restricted to the mask), ``ladder_angle``/``ladder_zero`` (N, L),
    ``total_turning`` (N,), ``straightness``/``r2``/``n_points`` (N, I), ``local_angle`` (N,)
    (NaN when the grid has no point at ε = 0 or not ±delta_k steps around it).
    """
    z = z.to(torch.float64)
    eps = eps.to(torch.float64)
    n, t_len = z.shape[:2]
    nan = float("nan")
    c = centre_index(eps)
    out: dict[str, Tensor] = {}

    steps = z[:, 1:] - z[:, :-1]  # (N, T-1, F)
    slen = steps.norm(dim=-1)  # (N, T-1)
    angles = torch.full((n, t_len), nan, dtype=torch.float64)
    if t_len >= 3:
        angles[:, 1:-1] = angle_deg(steps[:, :-1], steps[:, 1:], zero_tol)
    out["angles"] = angles

    # ladder: subsample the grid at every k-th point through the centre
    lad_a, lad_z = [], []
    for k in ladder:
        idx = torch.arange(c % k, t_len, k)
        if idx.numel() < 2:
            lad_a.append(torch.full((n,), nan, dtype=torch.float64))
            lad_z.append(torch.zeros(n, dtype=torch.long))
            continue
        zs, ms = z[:, idx], mask[:, idx]
        s = zs[:, 1:] - zs[:, :-1]
        sl = s.norm(dim=-1)
        sv = ms[:, 1:] & ms[:, :-1]  # step inside the region
        lad_z.append((sv & (sl <= zero_tol)).sum(1))
        if idx.numel() < 3:
            lad_a.append(torch.full((n,), nan, dtype=torch.float64))
            continue
        a = angle_deg(s[:, :-1], s[:, 1:], zero_tol)
        av = sv[:, :-1] & sv[:, 1:] & ~torch.isnan(a)
        cnt = av.sum(1)
        mean = torch.where(av, a, 0.0).sum(1) / cnt.clamp_min(1)
        lad_a.append(torch.where(cnt > 0, mean, nan))
    out["ladder_angle"] = torch.stack(lad_a, 1) if lad_a else torch.empty(n, 0, dtype=torch.float64)
    out["ladder_zero"] = torch.stack(lad_z, 1) if lad_z else torch.empty(n, 0, dtype=torch.long)

    first, last, anyv = _masked_first_last(mask)
    npts = mask.sum(1)
    resolved = npts >= min_points
    # total turning: Σθ over region / region length in ε
    amask = torch.zeros_like(mask)
    if t_len >= 3:
        amask[:, 1:-1] = mask[:, :-2] & mask[:, 1:-1] & mask[:, 2:]
    amask &= ~torch.isnan(angles)
    length = eps[last] - eps[first]
    tot = torch.where(amask, angles, 0.0).sum(1) / length.clamp_min(1e-300)
    out["total_turning"] = torch.where(resolved & (length > 0), tot, nan)

    # cumulative path length for straightness
    cs = torch.zeros(n, t_len, dtype=torch.float64)
    cs[:, 1:] = slen.cumsum(1)
    str_l, r2_l, np_l = [], [], []
    scale = float(eps.abs().max()) if t_len else 1.0
    for Ei in intervals:
        m = mask & (eps.abs() <= Ei * (1 + 1e-9) + 1e-12 * scale).view(1, -1)
        f, la, _ = _masked_first_last(m)
        k = m.sum(1)
        ok = k >= min_points
        path = cs.gather(1, la.view(-1, 1)).squeeze(1) - cs.gather(1, f.view(-1, 1)).squeeze(1)
        chord = (z[torch.arange(n), la] - z[torch.arange(n), f]).norm(dim=-1)
        st = chord / path.clamp_min(1e-300)
        str_l.append(torch.where(ok & (path > 0), st, nan))
        # R²: share of Σ_t ‖z_t − z̄‖² explained by the affine fit z ≈ a + ε b
        w = m.to(torch.float64)
        kk = w.sum(1).clamp_min(1)
        em = (w * eps.view(1, -1)).sum(1) / kk
        zm = (w.unsqueeze(-1) * z).sum(1) / kk.view(-1, 1)
        ec = (eps.view(1, -1) - em.view(-1, 1)) * w  # (N, T)
        zc = (z - zm.unsqueeze(1)) * w.unsqueeze(-1)
        sst = (zc * zc).sum((1, 2))
        see = (ec * ec).sum(1)
        cov = (ec.unsqueeze(-1) * zc).sum(1)  # (N, F)
        r2 = (cov * cov).sum(1) / (see * sst).clamp_min(1e-300)
        r2_l.append(torch.where(ok & (sst > 0) & (see > 0), r2.clamp(0.0, 1.0), nan))
        np_l.append(k)
    out["straightness"] = torch.stack(str_l, 1)
    out["r2"] = torch.stack(r2_l, 1)
    out["n_points"] = torch.stack(np_l, 1)

    # local turning angle at ε = 0 from the grid points at ±delta_k steps
    if delta_k is not None and has_exact_zero(eps) and c - delta_k >= 0 and c + delta_k < t_len:
        z0 = z[:, c]
        out["local_angle"] = angle_deg(z0 - z[:, c - delta_k], z[:, c + delta_k] - z0, zero_tol)
    else:
        out["local_angle"] = torch.full((n,), nan, dtype=torch.float64)
    out["resolved"] = resolved & anyv
    return out


@dataclass
class SpaceCurvature:
    """Curvature measures of one output space (penultimate features or logits), per sample.

    Attributes:
        angles: (N, T) turning angle θ_t in degrees at each grid point at the fine step h₀
            (NaN at the two ends and where a neighbouring step has zero length); full grid.
        ladder_angle: (N, L) mean turning angle (degrees) over the region at steps h₀·k.
        ladder_zero: (N, L) zero-length steps inside the region at each ladder step (excluded
            from the means, counted here).
        total_turning: (N,) Σθ_t (fine step) over the region / its length in ε: degrees per unit ε.
        straightness: (N, I) ‖z_last − z_first‖ / path length, over region ∩ [−Eᵢ, Eᵢ].
        r2: (N, I) linearity R² of the affine fit z ≈ a + ε b over region ∩ [−Eᵢ, Eᵢ].
        local_angle: (N,) 180° − angle(z(−Δ) − z(0), z(+Δ) − z(0)) from the grid, degrees.
    """

    angles: Tensor
    ladder_angle: Tensor
    ladder_zero: Tensor
    total_turning: Tensor
    straightness: Tensor
    r2: Tensor
    local_angle: Tensor

    @property
    def angle_fine(self) -> Tensor:
        """(N,) mean turning angle over the region at the grid step h₀ (= ladder step 1)."""
        return self.ladder_angle[:, 0]

    @property
    def curvedness(self) -> Tensor:
        """(N,) headline curvedness 1 − R² over the largest interval (region ∩ [−E, E])."""
        return 1.0 - self.r2[:, -1]


class GridScale:
    """The scale of an ε grid ``eps`` (T,): its step h₀ (median step) and half-width E."""

    eps: Tensor

    @property
    def step(self) -> float:
        return float(self.eps.diff().median())

    @property
    def E(self) -> float:
        return float(self.eps.abs().max())


@dataclass
class Curvature(GridScale):
    """Curvature of N trajectories, with its scale (METHOD.md §2).

    ``features`` and ``logits`` hold the measures of each space. Region bookkeeping:
    ``region_lo``/``region_hi`` grid indices (inclusive) of the in-class part, ``region_points``
    their count, ``unresolved`` True when the in-class part has fewer than 5 grid points
    (its measures are NaN when ``region == "in-class"``; counted in :attr:`n_unresolved`),
    ``flip_lo_eps``/``flip_hi_eps`` the ε of the first grid point with another class (NaN:
    none on the grid). ``n_points`` (N, I): grid points each interval measure used.
    """

    features: SpaceCurvature
    logits: SpaceCurvature
    eps: Tensor
    region: str
    ladder: tuple[int, ...]
    intervals: tuple[float, ...]
    delta: float
    region_lo: Tensor
    region_hi: Tensor
    region_points: Tensor
    unresolved: Tensor
    flip_lo_eps: Tensor
    flip_hi_eps: Tensor
    n_points: Tensor
    clean_pred: Tensor
    labels: Tensor | None = None
    zero_tol: float = 0.0

    @property
    def ladder_steps(self) -> tuple[float, ...]:
        """The ladder in ε units: h₀·k."""
        return tuple(self.step * k for k in self.ladder)

    @property
    def curvedness(self) -> Tensor:
        """(N,) headline: 1 − R² of the penultimate features over [−E, E] ∩ region."""
        return self.features.curvedness

    @property
    def n_unresolved(self) -> int:
        return int(self.unresolved.sum())

    @property
    def correct(self) -> Tensor | None:
        return None if self.labels is None else self.clean_pred == self.labels

    def scale(self) -> dict[str, Any]:
        """The scale every number here carries."""
        return {"step": self.step, "E": self.E, "T": int(self.eps.numel()), "region": self.region,
                "ladder": list(self.ladder), "ladder_steps": list(self.ladder_steps),
                "intervals": list(self.intervals), "delta": self.delta, "zero_tol": self.zero_tol,
                "min_region_points": MIN_REGION_POINTS}

    def summary(self) -> Any:
        """Per-model aggregates with their scale: n, unresolved, median/mean curvedness (penultimate
        and logits), curved share at 0.25, mean turning angle per ladder step; a one-row DataFrame."""
        import numpy as np
        import pandas as pd

        ok = ~self.unresolved.numpy()
        if self.correct is not None:
            ok &= self.correct.numpy()
        out: dict[str, Any] = {"n": int(self.clean_pred.numel()), "n_used": int(ok.sum()),
                               "unresolved": self.n_unresolved, "E": self.E, "step": self.step, "region": self.region}
        for sp, m in (("feat", self.features), ("logit", self.logits)):
            c = m.curvedness.numpy()[ok]
            c = c[np.isfinite(c)]
            out[f"{sp}_curvedness_median"] = float(np.median(c)) if c.size else float("nan")
            out[f"{sp}_curvedness_mean"] = float(c.mean()) if c.size else float("nan")
            for j, h in enumerate(self.ladder_steps):
                a = m.ladder_angle[:, j].numpy()[ok]
                a = a[np.isfinite(a)]
                out[f"{sp}_angle_mean_h{h:g}"] = float(a.mean()) if a.size else float("nan")
        c = self.features.curvedness.numpy()[ok]
        out["curved_share_0.25"] = float((c[np.isfinite(c)] > 0.25).mean()) if np.isfinite(c).any() else float("nan")
        return pd.DataFrame([out])

    def to_dataframe(self) -> Any:
        """One row per sample; column names carry their scale; ``df.attrs`` holds :meth:`scale`."""
        import pandas as pd

        n = int(self.clean_pred.numel())
        cols: dict[str, Any] = {"sample": range(n)}
        cols["label"] = self.labels.numpy() if self.labels is not None else [None] * n
        cols["pred"] = self.clean_pred.numpy()
        corr = self.correct
        cols["correct"] = corr.numpy() if corr is not None else [None] * n
        cols["region"] = [self.region] * n
        cols["region_points"] = self.region_points.numpy()
        cols["unresolved"] = self.unresolved.numpy()
        cols["region_lo_eps"] = self.eps[self.region_lo.clamp(0, self.eps.numel() - 1)].numpy()
        cols["region_hi_eps"] = self.eps[self.region_hi.clamp(0, self.eps.numel() - 1)].numpy()
        cols["flip_lo_eps"] = self.flip_lo_eps.numpy()
        cols["flip_hi_eps"] = self.flip_hi_eps.numpy()
        for j, e in enumerate(self.intervals):
            cols[f"n_points_E{e:g}"] = self.n_points[:, j].numpy()
        for sp, m in (("feat", self.features), ("logit", self.logits)):
            cols[f"{sp}_curvedness_E{self.intervals[-1]:g}"] = m.curvedness.numpy()
            for j, h in enumerate(self.ladder_steps):
                cols[f"{sp}_angle_h{h:g}"] = m.ladder_angle[:, j].numpy()
            for j, h in enumerate(self.ladder_steps):
                cols[f"{sp}_zero_steps_h{h:g}"] = m.ladder_zero[:, j].numpy()
            cols[f"{sp}_total_turning"] = m.total_turning.numpy()
            for j, e in enumerate(self.intervals):
                cols[f"{sp}_straightness_E{e:g}"] = m.straightness[:, j].numpy()
            for j, e in enumerate(self.intervals):
                cols[f"{sp}_r2_E{e:g}"] = m.r2[:, j].numpy()
            cols[f"{sp}_local_angle_d{self.delta:g}"] = m.local_angle.numpy()
        df = pd.DataFrame(cols)
        df.attrs.update(self.scale())
        return df


def region_mask(traj_preds: Tensor, clean_pred: Tensor, eps: Tensor, region: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(mask (N, T), lo, hi, flip_lo, flip_hi) for ``region`` in {"in-class", "full"}."""
    if region not in REGIONS:
        raise RobcurveError(f"unknown region {region!r}", where="curvature", fix=f"use one of {REGIONS}")
    lo, hi, flo, fhi = in_class_region(traj_preds, clean_pred, eps)
    t_len = eps.numel()
    if region == "full":
        mask = torch.ones(traj_preds.shape[0], t_len, dtype=torch.bool)
    else:
        ar = torch.arange(t_len).view(1, -1)
        mask = (ar >= lo.view(-1, 1)) & (ar <= hi.view(-1, 1))
    return mask, lo, hi, flo, fhi


def _delta_steps(delta: float | None, step: float, where: str) -> tuple[int, float]:
    if delta is None:
        return 1, step
    k = round(delta / step)
    if k < 1 or abs(k * step - delta) > 1e-6 * delta:
        raise RobcurveError(f"Δ = {delta:g} is not a multiple of the grid step {step:g}", where=where,
                            fix="pass delta=None (the grid step) or a multiple of it, or use local_turning_angle()")
    return int(k), float(delta)


def curvature(traj: Trajectory, *, region: str = "in-class", ladder: Sequence[int] = (1, 5, 10, 20, 50),
              intervals: Sequence[float] | None = None, delta: float | None = None,
              zero_tol: float = 0.0) -> Curvature:
    """Curvature measures of a :class:`Trajectory`, for features and logits (METHOD.md §2).

    No forwards: the ladder subsamples the one grid (every k-th point through ε = 0).

    Args:
        traj: from :func:`trajectory`; its grid must be uniform (step h₀).
        region: ``"in-class"`` (grid points between the first label flips on either side of
            ε = 0; fewer than 5 points: unresolved, measures NaN, counted) or ``"full"``.
            A flip is a change of the predicted class from the prediction at ε = 0 (not from
            y: a misclassified sample still has a decision region around x).
        ladder: steps in grid steps; mean turning angle reported at h₀·k. Must include 1 first
            if :attr:`SpaceCurvature.angle_fine` is to be the fine step (1 is prepended if missing).
        intervals: half-widths Eᵢ (ε units) for straightness and R²; default (E/10, E/3, E).
            The last one is the headline interval (curvedness = 1 − R² there).
        delta: Δ of the local turning angle at ε = 0 (a multiple of h₀; default h₀).
        zero_tol: a step of norm <= zero_tol counts as zero-length (excluded, counted).

    Returns:
        :class:`Curvature`; angles in degrees, total turning in degrees per unit ε.
    """
    if traj.T < 3:
        raise RobcurveError(f"curvature needs at least 3 grid points, got {traj.T}", where="curvature",
                            fix="use a grid with T >= 3 (default 201)")
    if not traj.uniform:
        raise RobcurveError("curvature needs a uniform ε grid (the ladder subsamples it)", where="curvature",
                            fix="use equally spaced ε, e.g. the default grid trajectory(..., T=, E=)")
    lad = tuple(int(k) for k in ladder)
    if any(k < 1 for k in lad):
        raise RobcurveError(f"ladder steps must be positive integers, got {ladder}", where="curvature", fix="e.g. (1, 5, 10, 20, 50)")
    if not lad or lad[0] != 1:
        lad = (1, *[k for k in lad if k != 1])
    E = traj.E
    ivs = tuple(float(e) for e in (intervals if intervals is not None else (E / 10, E / 3, E)))
    if not ivs or any(not (e > 0) for e in ivs):
        raise RobcurveError(f"intervals must be positive half-widths, got {intervals}", where="curvature", fix="e.g. (0.01, 0.033, 0.1)")
    dk, dval = _delta_steps(delta, traj.step, "curvature")
    mask, lo, hi, flo, fhi = region_mask(traj.preds, traj.clean_pred, traj.eps, region)
    npts = (hi - lo + 1).clamp_min(0)
    unresolved = npts < MIN_REGION_POINTS
    kw = dict(ladder=lad, intervals=ivs, delta_k=dk, zero_tol=zero_tol)
    spaces = []
    for z in (traj.features, traj.logits):
        m = space_measures(z, traj.eps, mask, **kw)  # type: ignore[arg-type]
        spaces.append(SpaceCurvature(m["angles"], m["ladder_angle"], m["ladder_zero"], m["total_turning"],
                                     m["straightness"], m["r2"], m["local_angle"]))
        n_points = m["n_points"]
    if region == "in-class":  # an unresolved in-class part has no measures
        for sp in spaces:
            for name in ("ladder_angle", "total_turning", "straightness", "r2"):
                v = getattr(sp, name)
                sel = unresolved.view(-1, *([1] * (v.dim() - 1))).expand_as(v)
                setattr(sp, name, v.masked_fill(sel, float("nan")))
    return Curvature(spaces[0], spaces[1], traj.eps, region, lad, ivs, dval, lo, hi, npts, unresolved, flo, fhi,
                     n_points, traj.clean_pred, traj.labels, zero_tol)


def local_turning_angle(model: nn.Module, x: Tensor, d: Tensor, delta: float = 1e-3, *,
                        space: str = "features", features_fn: FeaturesFn | None = None,
                        clamp: bool = False) -> Tensor:
    """Local turning angle at ε = 0 with a finite difference Δ (the author's toolkit form).

    θ₀ = 180° − angle between z(x − Δd) − z(x) and z(x + Δd) − z(x), from three forwards
    per image (one batch of 3N). Degrees, (N,); NaN where an output did not move.

    Args:
        space: ``"features"`` (penultimate) or ``"logits"``.
    """
    if space not in ("features", "logits"):
        raise RobcurveError(f"unknown space {space!r}", where="local_turning_angle", fix="use 'features' or 'logits'")
    if not (delta > 0):
        raise RobcurveError(f"Δ must be > 0, got {delta}", where="local_turning_angle", fix="e.g. delta=1e-3")
    tr = trajectory(model, x, d, torch.tensor([-delta, 0.0, delta], dtype=torch.float64), clamp=clamp,
                    features_fn=features_fn)
    z = (tr.features if space == "features" else tr.logits).to(torch.float64)
    # 180° − angle(z₋ − z₀, z₊ − z₀) = angle(z₀ − z₋, z₊ − z₀), the grid form's expression
    return angle_deg(z[:, 1] - z[:, 0], z[:, 2] - z[:, 1])
