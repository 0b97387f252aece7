"""Travel distance to the decision boundary along a direction (METHOD.md §3).

The travel distance of image x with label y along d is the smallest ε > 0 with
argmax f(x + ε d) ≠ y. Search: forward in steps of h, many ε per batched forward, all samples
advanced together (the ε's per sample and round double from 16, so a near boundary does not
pay for a search up to eps_max), stopping once every sample has flipped; then bisection of the
last step to ``tol``. The reported ε is the upper end of the final bracket: a point where the
label has flipped, at most ``tol`` beyond the boundary. A flip region thinner than h can be
stepped over.

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


FIRST_ROUND_STEPS = 16  # ε's per sample in the first forward-search round (then doubling)


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
                    tol: float = 1e-6, eps_max: float = 1.0, chunk: int = 4096, clamp: bool = False,
                    features_fn: FeaturesFn | None = None) -> TravelDistance:
    """Smallest ε > 0 with argmax f(x + ε d) ≠ y, per sample (METHOD.md §3).

    Args:
        model: module mapping images in [0, 1] to logits.
        x: images (N, C, H, W) in [0, 1]; y: labels (N,); direction: d like x.
        h: forward-search step in ε (default 1e-3); tol: final bracket width (default 1e-6).
        eps_max: search limit; no flip up to it means censored (eps = NaN).
        chunk: images per forward. Each round of the forward search puts
            min(chunk // n_active, 16·2^round) ε's per still-active sample into one batch.
        clamp: clamp inputs to [0, 1] (off by default).

    Returns:
        :class:`TravelDistance`.
    """
    if not (h > 0 and tol > 0 and eps_max > 0):
        raise RobcurveError(f"h, tol and eps_max must be > 0 (got {h}, {tol}, {eps_max})", where="travel_distance",
                            fix="e.g. h=1e-3, tol=1e-6, eps_max=1.0")
    if int(chunk) < 1:
        raise RobcurveError(f"chunk must be >= 1, got {chunk}", where="travel_distance", fix="e.g. chunk=4096")
    chunk = int(chunk)
    rob = as_robmodel(model, features_fn)
    x = check_images(x, "travel_distance").to(rob.device)
    d = check_direction(x, direction, "travel_distance(direction=...)")
    n = x.shape[0]
    y = torch.as_tensor(y).long().view(-1).cpu()
    if y.numel() != n:
        raise RobcurveError(f"y has {y.numel()} labels for {n} images", where="travel_distance", fix="pass one label per image")

    all_rows = torch.arange(n)
    pred0 = _preds_at(rob, x, d, all_rows, torch.zeros(n, dtype=torch.float64), chunk, clamp)
    n_forward = n
    correct = pred0 == y
    n_steps = max(1, math.ceil(eps_max / h - 1e-9))

    def grid(k: Tensor) -> Tensor:  # ε of forward-search step k (k = 0 .. n_steps)
        return torch.clamp(k.to(torch.float64) * h, max=eps_max)

    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), float("nan"), dtype=torch.float64)
    flipped_to = torch.full((n,), -1, dtype=torch.long)
    active = correct.clone()
    k0, grow = 1, FIRST_ROUND_STEPS
    while active.any() and k0 <= n_steps:
        ids = active.nonzero().flatten()
        # ε's per sample in this forward: as many as the chunk holds, but at most `grow`, which
        # doubles each round, so a near boundary does not pay for a search up to eps_max
        m = min(max(1, chunk // ids.numel()), grow, n_steps - k0 + 1)
        grow *= 2
        ks = torch.arange(k0, k0 + m)
        rows = ids.repeat_interleave(m)
        eps = grid(ks).repeat(ids.numel())
        p = _preds_at(rob, x, d, rows, eps, chunk, clamp).view(ids.numel(), m)
        n_forward += rows.numel()
        flip = p != y[ids].view(-1, 1)
        has = flip.any(1)
        first = flip.int().argmax(1)
        f_ids = ids[has]
        kf = ks[first[has]]
        hi[f_ids] = grid(kf)
        lo[f_ids] = grid(kf - 1)
        flipped_to[f_ids] = p[has, first[has]]
        active[f_ids] = False
        k0 += m
    censored = active  # correct, never flipped up to eps_max

    # bisection of (lo, hi] for the flipped samples, all in lockstep
    fl = (correct & ~censored).nonzero().flatten()
    if fl.numel():
        width = float((hi[fl] - lo[fl]).max())
        iters = max(0, math.ceil(math.log2(width / tol))) if width > tol else 0
        for _ in range(iters):
            mid = (lo[fl] + hi[fl]) / 2
            p = _preds_at(rob, x, d, fl, mid, chunk, clamp)
            n_forward += fl.numel()
            fmid = p != y[fl]
            hi[fl] = torch.where(fmid, mid, hi[fl])
            lo[fl] = torch.where(fmid, lo[fl], mid)
            flipped_to[fl] = torch.where(fmid, p, flipped_to[fl])

    eps_out = torch.where(correct, hi, torch.zeros(n, dtype=torch.float64))
    flipped_to = torch.where(correct, flipped_to, pred0)
    dflat = d.detach().flatten(1).to(torch.float64).cpu()
    linf = eps_out * dflat.abs().amax(1)
    l2 = eps_out * dflat.norm(dim=1)
    return TravelDistance(eps_out, linf, l2, censored, correct, flipped_to, y, float(h), float(tol), float(eps_max),
                          int(n_forward))
