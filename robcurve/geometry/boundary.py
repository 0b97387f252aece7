"""Travel distance to the decision boundary along a direction (METHOD.md §3).

The travel distance of image x with label y along d is the smallest ε > 0 with
argmax f(x + ε d) ≠ y. The rule: the first point ε_k = min(k h, eps_max), k = 1, 2, …, of the
grid of step h where the label has flipped, then bisection of (ε_{k−1}, ε_k] to ``tol``. The
reported ε is the upper end of the final bracket: a point where the label has flipped, at
most ``tol`` beyond the boundary. A flip region thinner than h can be stepped over (that is
the rule, not the search).

Search (all samples advanced together, many ε per batched forward): a coarse grid of stride
``coarse`` (default 4) steps ahead of each sample's frontier, a few coarse points per round
(at most half the coarse points scanned so far, so a near boundary does not pay for a search
up to eps_max), while the same forwards evaluate the grid points of the cells behind the
frontier: those are needed whatever comes, so the only speculative forwards are the coarse
points beyond the first flip. Once a coarse point has flipped, one round evaluates the grid
points left before it; since every grid point below the reported one is evaluated, the
result is exactly the rule's first flip (an island of another class between two coarse points
is found too). Forwards per image: the rule's minimum (1 + k + ⌈log2(h/tol)⌉) plus at most
``coarse − 1`` and the speculative coarse points; ``TravelDistance.forwards`` counts them.

Choices (METHOD.md is silent):
* censored samples (no flip for ε <= eps_max) get ``eps = NaN`` and ``censored = True``;
  :meth:`TravelDistance.median` ranks them above every finite distance instead of dropping them.
* a sample misclassified at ε = 0 gets ``eps = 0`` and ``correct = False`` (the definition's
  value); statistics use correct samples only (METHOD.md §0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robcurve.errors import RobcurveError
from robcurve.geometry.directions import check_direction, check_images
from robcurve.memory import cached_chunk_size, check_chunk, memory_cap
from robcurve.models.wrapper import FeaturesFn, RobcurveModel, as_robmodel


@dataclass
class TravelDistance:
    """Per-sample travel distance along d.

    Attributes:
        eps: (N,) float64, the ε of the first flip (units of d: L∞ pixel units for sign
            directions); NaN when censored, 0 when misclassified at ε = 0.
        linf: (N,) ‖ε d‖∞ in [0, 1] pixel units (= eps when ‖d‖∞ = 1).
        l2: (N,) ‖ε d‖₂ in [0, 1] pixel units.
        censored: (N,) bool, no flip for ε <= eps_max.
        correct: (N,) bool, argmax f(x) == y.
        flipped_to: (N,) class at ε = eps (−1 when censored).
        labels: (N,) y.
        h, tol, eps_max: search settings; n_forward: images forwarded in all.
        forwards: (N,) int64, images forwarded for each sample (the clean forward, the search
            and the bisection); the minimum for the rule is 1 + k + ⌈log2(h / tol)⌉ for a
            sample whose first flipped grid point is k (1 + ⌈eps_max / h⌉ when censored, 1 when
            misclassified).
    """

    eps: Tensor
    linf: Tensor
    l2: Tensor
    censored: Tensor
    correct: Tensor
    flipped_to: Tensor
    labels: Tensor
    h: float
    tol: float
    eps_max: float
    n_forward: int = 0
    forwards: Tensor | None = None

    @property
    def n_censored(self) -> int:
        return int((self.censored & self.correct).sum())

    def median(self, norm: str = "eps") -> float:
        """Median over correctly classified samples, censored ones ranked above all others.

        Returns ``inf`` when the median falls among censored samples (it is > eps_max), NaN
        when no sample is correct. ``norm``: "eps", "linf" or "l2".
        """
        v = getattr(self, norm)[self.correct].clone()
        if v.numel() == 0:
            return float("nan")
        v[self.censored[self.correct]] = float("inf")
        s, k = v.sort().values, v.numel()
        return float(s[k // 2]) if k % 2 else float((s[k // 2 - 1] + s[k // 2]) / 2)

    def summary(self) -> dict[str, Any]:
        return {"n": int(self.eps.numel()), "n_correct": int(self.correct.sum()), "n_censored": self.n_censored,
                "median_eps": self.median("eps"), "median_linf": self.median("linf"), "median_l2": self.median("l2"),
                "h": self.h, "tol": self.tol, "eps_max": self.eps_max}

    def to_dataframe(self) -> Any:
        """One row per sample: sample, label, correct, censored, eps, linf, l2, flipped_to."""
        import pandas as pd

        df = pd.DataFrame({"sample": range(int(self.eps.numel())), "label": self.labels.numpy(),
                           "correct": self.correct.numpy(), "censored": self.censored.numpy(),
                           "eps": self.eps.numpy(), "linf": self.linf.numpy(), "l2": self.l2.numpy(),
                           "flipped_to": self.flipped_to.numpy()})
        df.attrs.update({"h": self.h, "tol": self.tol, "eps_max": self.eps_max, "censored_value": "NaN"})
        return df


COARSE = 4  # coarse stride of the forward search, in grid steps h
GROWTH = 0.5  # coarse points ahead per round: at most this share of the coarse points scanned so far


def _preds_at(model: RobcurveModel, x: Tensor, d: Tensor, rows: Tensor, eps: Tensor, chunk: int, clamp: bool) -> Tensor:
    """argmax f(x[rows[j]] + eps[j] d[rows[j]]) for j, in chunks; (len(rows),) on the CPU."""
    out = []
    with torch.no_grad():
        for a in range(0, rows.numel(), chunk):
            r = rows[a:a + chunk].to(x.device)
            e = eps[a:a + chunk].to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
            inp = torch.addcmul(x[r], e, d[r])
            if clamp:
                inp = inp.clamp_(0.0, 1.0)
            out.append(model(inp).argmax(-1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def travel_distance(model: nn.Module, x: Tensor, y: Tensor, direction: Tensor, *, h: float = 1e-3,
                    tol: float = 1e-6, eps_max: float = 1.0, chunk: int | str | None = None, clamp: bool = False,
                    features_fn: FeaturesFn | None = None, coarse: int = COARSE) -> TravelDistance:
    """Smallest ε > 0 with argmax f(x + ε d) ≠ y, per sample (METHOD.md §3).

    The rule: the first point of the grid ε_k = min(k h, eps_max), k = 1, 2, …, where the label
    has flipped, then bisection of (ε_{k-1}, ε_k] to ``tol``. The search finds exactly that
    point with few forwards (METHOD.md §3 has the argument): each round evaluates, for every
    sample still searching, the grid points of the cells behind its frontier (every point
    below the first flip must be evaluated anyway, so none of these is wasted) and the next
    few points of a coarse grid of stride ``coarse`` ahead of it (the only speculative work:
    at most ``GROWTH`` times the coarse points scanned so far). Once a coarse point has
    flipped, one more round evaluates the cells before it; the first flipped grid point is
    then known exactly, islands of another class between coarse points included.

    Args:
        model: module mapping images in [0, 1] to logits.
        x: images (N, C, H, W) in [0, 1]; y: labels (N,); direction: d like x.
        h: grid step in ε (default 1e-3); tol: final bracket width (default 1e-6).
        eps_max: search limit; no flip up to it means censored (eps = NaN).
        chunk: images per forward at most; None or "auto": the batch size measured for this
            model by :func:`robcurve.geometry.trajectory.trajectory` when there is one, else
            the memory cap (:func:`robcurve.memory.memory_cap`).
        clamp: clamp inputs to [0, 1] (off by default).
        coarse: stride of the coarse grid in steps of h (1: every grid point is coarse). The
            result does not depend on it; the number of forwards does.

    Returns:
        :class:`TravelDistance` with per-sample ``forwards``.
    """
    if not (h > 0 and tol > 0 and eps_max > 0):
        raise RobcurveError(f"h, tol and eps_max must be > 0 (got {h}, {tol}, {eps_max})", where="travel_distance",
                            fix="e.g. h=1e-3, tol=1e-6, eps_max=1.0")
    if isinstance(coarse, bool) or not isinstance(coarse, int) or coarse < 1:
        raise RobcurveError(f"coarse must be an int >= 1, got {coarse!r}", where="travel_distance", fix="e.g. coarse=4")
    rob = as_robmodel(model, features_fn)
    x = check_images(x, "travel_distance").to(rob.device)
    d = check_direction(x, direction, "travel_distance(direction=...)")
    n = x.shape[0]
    if chunk is None or chunk == "auto":
        chunk = cached_chunk_size(rob, x) if n else 1
    chunk = check_chunk(chunk, "travel_distance")  # type: ignore[arg-type]
    if n:
        chunk = min(chunk, memory_cap(rob, x))  # within the memory budget (robcurve.memory)
    y = torch.as_tensor(y).long().view(-1).cpu()
    if y.numel() != n:
        raise RobcurveError(f"y has {y.numel()} labels for {n} images", where="travel_distance", fix="pass one label per image")

    all_rows = torch.arange(n)
    pred0 = _preds_at(rob, x, d, all_rows, torch.zeros(n, dtype=torch.float64), chunk, clamp)
    forwards = torch.ones(n, dtype=torch.long)
    correct = pred0 == y
    n_steps = max(1, math.ceil(eps_max / h - 1e-9))

    def grid(k: Tensor) -> Tensor:  # ε of grid point k (k = 0 .. n_steps)
        return torch.clamp(k.to(torch.float64) * h, max=eps_max)

    # forward search, per sample: kstar = the first flipped grid index (0: none)
    s = int(coarse)

    def is_coarse(k: int) -> bool:
        return k % s == 0 or k == n_steps

    kstar = torch.zeros(n, dtype=torch.long)
    flipped_to = torch.full((n,), -1, dtype=torch.long)
    filled = [0] * n  # grid points 1..filled[i] are evaluated, none flipped
    frontier = [0] * n  # coarse points <= frontier[i] are evaluated, none flipped (frontier >= filled)
    upper = [0] * n  # the first flipped coarse point found (0: none yet)
    searching = set(correct.nonzero().flatten().tolist())
    while searching:
        rows_l: list[int] = []
        ks_l: list[int] = []
        segs: list[tuple[int, int, int, int]] = []  # (sample, start, fill count, ahead count)
        for i in sorted(searching):
            # fill: every unevaluated grid point below the flipped coarse point, or below the
            # frontier; each is needed whatever comes (the first flip lies there, or all of
            # them must be checked unflipped)
            fill = [k for k in range(filled[i] + 1, upper[i] or frontier[i]) if not is_coarse(k)]
            ahead: list[int] = []  # the speculative part: the next coarse points
            if not upper[i]:
                k, m = frontier[i], max(1, int(GROWTH * (frontier[i] // s)))
                while len(ahead) < m and k < n_steps:
                    k = min(k + s - k % s, n_steps)
                    ahead.append(k)
            segs.append((i, len(ks_l), len(fill), len(ahead)))
            rows_l += [i] * (len(fill) + len(ahead))
            ks_l += fill + ahead
        rows = torch.tensor(rows_l, dtype=torch.long)
        p_t = _preds_at(rob, x, d, rows, grid(torch.tensor(ks_l, dtype=torch.long)), chunk, clamp)
        forwards += torch.bincount(rows, minlength=n)
        flip = (p_t != y[rows]).tolist()
        p_l = p_t.tolist()
        for i, a, nf, na in segs:
            hit = next((j for j in range(a, a + nf) if flip[j]), None)
            if hit is not None:  # the first flip is a filled point (before the coarse flip, or an island)
                kstar[i], flipped_to[i] = ks_l[hit], p_l[hit]
                searching.discard(i)
                continue
            if upper[i]:  # every grid point below the flipped coarse point is unflipped
                kstar[i] = upper[i]
                searching.discard(i)
                continue
            filled[i] = frontier[i]
            hit = next((j for j in range(a + nf, a + nf + na) if flip[j]), None)
            if hit is None:
                frontier[i] = ks_l[a + nf + na - 1] if na else frontier[i]
            else:
                frontier[i] = ks_l[hit - 1] if hit > a + nf else frontier[i]
                upper[i], flipped_to[i] = ks_l[hit], p_l[hit]
            end_k = upper[i] or frontier[i]
            left = any(not is_coarse(k) for k in range(filled[i] + 1, end_k))
            if upper[i] and not left:  # nothing between: the flipped coarse point is the first flip
                kstar[i] = upper[i]
                searching.discard(i)
            elif not upper[i] and frontier[i] >= n_steps and not left:
                searching.discard(i)  # censored: every grid point evaluated, none flipped
    censored = correct & (kstar == 0)
    lo = torch.where(kstar > 0, grid((kstar - 1).clamp_min(0)), torch.zeros(n, dtype=torch.float64))
    hi = torch.where(kstar > 0, grid(kstar), torch.full((n,), float("nan"), dtype=torch.float64))

    # bisection of (lo, hi] for the flipped samples, all in lockstep
    fl = (correct & ~censored).nonzero().flatten()
    if fl.numel():
        width = float((hi[fl] - lo[fl]).max())
        iters = max(0, math.ceil(math.log2(width / tol))) if width > tol else 0
        for _ in range(iters):
            mid = (lo[fl] + hi[fl]) / 2
            p = _preds_at(rob, x, d, fl, mid, chunk, clamp)
            forwards[fl] += 1
            fmid = p != y[fl]
            hi[fl] = torch.where(fmid, mid, hi[fl])
            lo[fl] = torch.where(fmid, lo[fl], mid)
            flipped_to[fl] = torch.where(fmid, p, flipped_to[fl])

    eps_out = torch.where(correct, hi, torch.zeros(n, dtype=torch.float64))
    flipped_to = torch.where(correct & ~censored, flipped_to, torch.where(correct, -1, pred0))
    dflat = d.detach().flatten(1).to(torch.float64).cpu()
    linf = eps_out * dflat.abs().amax(1)
    l2 = eps_out * dflat.norm(dim=1)
    return TravelDistance(eps_out, linf, l2, censored, correct, flipped_to, y, float(h), float(tol), float(eps_max),
                          int(forwards.sum()), forwards)
