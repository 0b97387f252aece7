"""Jump-out (METHOD.md §4): jump a little off the trajectory, then measure again.

For each sample: x' = x + η u with a jump u (``random`` seeded signs, ``orthogonal`` seeded
signs projected orthogonal to d and rescaled to ‖u‖∞ = 1, or ``fgsm`` one signed gradient
step; ‖u‖∞ = 1 in all three, so η is the L∞ size of the jump). From x' the direction d' is
recomputed with the same rule as d (``keep_direction=True`` travels along the original d),
and curvature and travel distance are measured before (from x along d) and after (from x'
along d'). Shortcut ratio = (‖η u‖ + distance after) / distance before, in L∞ and in L2.

Choices (METHOD.md is silent):
* the jump's random draw uses seed ``seed + JUMP_SEED_OFFSET`` so that a ``random`` jump is
  never the ``random`` direction itself; both seeds are stored.
* x' is not clamped to [0, 1] unless ``clamp=True``.
* the ratio is NaN where it is undefined: misclassified samples, censored before or after
  (``censored_before``/``censored_after`` say which), or a zero distance before.
* refused (RobcurveError): a jump along d itself with travel along d (``jump="fgsm"``,
  ``direction="fgsm"``, ``keep_direction=True``; or any jump parallel to the kept / custom
  direction). A recomputed d' that happens to be parallel to u is flagged (``jump_parallel``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robcurve.errors import RobcurveError
from robcurve.geometry.boundary import TravelDistance, travel_distance
from robcurve.geometry.directions import (
    check_images,
    fgsm_sign,
    get_direction,
    orthogonal_to,
    random_signs,
)
from robcurve.geometry.trajectory import Curvature, curvature, predict, trajectory
from robcurve.models.wrapper import FeaturesFn, as_robmodel

JUMPS = ("random", "orthogonal", "fgsm")
JUMP_SEED_OFFSET = 1_000_003


@dataclass
class JumpOut:
    """Per-sample jump-out result (before: from x along d; after: from x' along d').

    Attributes:
        curvature_before, curvature_after: :class:`Curvature` of the two trajectories.
        travel_before, travel_after: :class:`TravelDistance` along d and d'.
        jump_flipped: (N,) the jump itself changed the predicted class (pred(x') ≠ pred(x)).
        pred_jump: (N,) argmax f(x').
        jump_linf, jump_l2: (N,) ‖η u‖∞ (= η) and ‖η u‖₂, pixel units.
        shortcut_ratio: (N,) (‖ηu‖∞ + L∞ distance after) / L∞ distance before.
        shortcut_ratio_l2: (N,) the same in L2.
        jump_parallel: (N,) u parallel to d' (the travel after measures the same line).
    """

    curvature_before: Curvature
    curvature_after: Curvature
    travel_before: TravelDistance
    travel_after: TravelDistance
    jump_flipped: Tensor
    pred_jump: Tensor
    jump_linf: Tensor
    jump_l2: Tensor
    shortcut_ratio: Tensor
    shortcut_ratio_l2: Tensor
    jump_parallel: Tensor
    eta: float
    jump: str
    direction: str
    keep_direction: bool
    seed: int
    jump_seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    x_jump: Tensor | None = None  # (N, C, H, W) x' = x + η u
    direction_after: Tensor | None = None  # (N, C, H, W) d' (d with keep_direction)

    def summary(self) -> Any:
        """Per-model aggregates (correct samples, censored-before left out): medians of curvedness and
        travel before/after, median shortcut ratio, share below 1, jump flips; a one-row DataFrame."""
        import numpy as np
        import pandas as pd

        df = self.to_dataframe()
        ok = df["correct"].to_numpy(bool) & ~df["censored_before"].to_numpy(bool)
        sr = df["shortcut_ratio"].to_numpy(float)[ok]
        sr = sr[np.isfinite(sr)]

        def med(c: str) -> float:
            v = df[c].to_numpy(float)[ok]
            v = v[np.isfinite(v)]
            return float(np.median(v)) if v.size else float("nan")

        return pd.DataFrame([{"n": len(df), "n_used": int(ok.sum()), "eta": self.eta, "jump": self.jump,
                              "keep_direction": self.keep_direction,
                              "curvedness_before_median": med("curvedness_before"),
                              "curvedness_after_median": med("curvedness_after"),
                              "eps_before_median": med("eps_before"), "eps_after_median": med("eps_after"),
                              "shortcut_ratio_median": float(np.median(sr)) if sr.size else float("nan"),
                              "shortcut_below_1": float((sr < 1).mean()) if sr.size else float("nan"),
                              "jump_flipped": int(df["jump_flipped"].sum())}])

    def to_dataframe(self) -> Any:
        """One row per sample with before/after columns; ``df.attrs`` holds the settings."""
        import pandas as pd

        cb, ca, tb, ta = self.curvature_before, self.curvature_after, self.travel_before, self.travel_after
        cols: dict[str, Any] = {
            "sample": range(int(self.jump_flipped.numel())),
            "label": tb.labels.numpy(), "correct": tb.correct.numpy(),
            "jump_flipped": self.jump_flipped.numpy(), "pred_jump": self.pred_jump.numpy(),
            "jump_parallel": self.jump_parallel.numpy(),
        }
        for tag, c in (("before", cb), ("after", ca)):
            cols[f"curvedness_{tag}"] = c.features.curvedness.numpy()
            cols[f"angle_fine_{tag}"] = c.features.angle_fine.numpy()
            cols[f"logit_curvedness_{tag}"] = c.logits.curvedness.numpy()
            cols[f"unresolved_{tag}"] = c.unresolved.numpy()
        for tag, t in (("before", tb), ("after", ta)):
            cols[f"eps_{tag}"] = t.eps.numpy()
            cols[f"linf_{tag}"] = t.linf.numpy()
            cols[f"l2_{tag}"] = t.l2.numpy()
            cols[f"censored_{tag}"] = t.censored.numpy()
        cols["jump_linf"] = self.jump_linf.numpy()
        cols["jump_l2"] = self.jump_l2.numpy()
        cols["shortcut_ratio"] = self.shortcut_ratio.numpy()
        cols["shortcut_ratio_l2"] = self.shortcut_ratio_l2.numpy()
        df = pd.DataFrame(cols)
        df.attrs.update({"eta": self.eta, "jump": self.jump, "direction": self.direction,
                         "keep_direction": self.keep_direction, "seed": self.seed, "jump_seed": self.jump_seed,
                         **self.settings, "curvature_scale": cb.scale()})
        return df


def _parallel(u: Tensor, d: Tensor) -> Tensor:
    uf, df_ = u.flatten(1).to(torch.float64), d.flatten(1).to(torch.float64)
    nu, nd = uf.norm(dim=1), df_.norm(dim=1)
    cos = (uf * df_).sum(1) / (nu * nd).clamp_min(1e-300)
    return (cos.abs() >= 1 - 1e-9) & (nu > 0) & (nd > 0)


def jump_out(model: nn.Module, x: Tensor, y: Tensor, *, eta: float = 2 / 255, jump: str = "random",
             direction: str = "fgsm", keep_direction: bool = False, seed: int = 0, custom: Tensor | None = None,
             T: int = 201, E: float = 0.1, region: str = "in-class", ladder: Sequence[int] = (1, 5, 10, 20, 50),
             h: float = 1e-3, tol: float = 1e-6, eps_max: float = 1.0, chunk_size: int = 4096, clamp: bool = False,
             features_fn: FeaturesFn | None = None, direction_options: dict[str, Any] | None = None,
             d: Tensor | None = None, curvature_before: Curvature | None = None) -> JumpOut:
    """Curvature and travel distance before and after a jump of size η (METHOD.md §4).

    Args:
        model: module mapping images in [0, 1] to logits; x: (N, C, H, W) in [0, 1]; y: (N,).
        eta: L∞ size of the jump in pixel units (default 2/255).
        jump: ``"random"`` (seeded signs), ``"orthogonal"`` (random, orthogonal to d) or ``"fgsm"``.
        direction: rule of the travel direction d (and d'), a name in ``directions``.
        keep_direction: travel along the original d after the jump instead of recomputing it.
        seed: seed of the direction rule; the jump uses ``seed + JUMP_SEED_OFFSET``.
        custom: tensor for ``direction="custom"``.
        T, E, region, ladder: trajectory grid and curvature settings (see :func:`curvature`).
        h, tol, eps_max: travel-distance search (see :func:`travel_distance`).
        chunk_size: images per forward.
        direction_options: extra options of the direction rule (e.g. ``{"eps": 0.1}`` for pgd).
        d, curvature_before: the direction at x and the curvature of the trajectory from x along
            it when the caller has them already (the runner's trajectory measurement, same grid
            and settings): reused instead of recomputed, with identical results.

    Returns:
        :class:`JumpOut`.
    """
    if jump not in JUMPS:
        raise RobcurveError(f"unknown jump {jump!r}", where="jump_out", fix=f"use one of {JUMPS}")
    if jump == "fgsm" and direction == "fgsm" and keep_direction:
        raise RobcurveError("a jump along d followed by travel along the same d is the same line and measures nothing",
                            where="jump_out(jump='fgsm', direction='fgsm', keep_direction=True)",
                            fix="use keep_direction=False (recompute the FGSM direction at x') or jump='random'/'orthogonal'")
    if not (eta > 0):
        raise RobcurveError(f"eta must be > 0, got {eta}", where="jump_out", fix="e.g. eta=2/255")
    rob = as_robmodel(model, features_fn)
    x = check_images(x, "jump_out").to(rob.device)
    y = torch.as_tensor(y).long().view(-1)
    if y.numel() != x.shape[0]:
        raise RobcurveError(f"y has {y.numel()} labels for {x.shape[0]} images", where="jump_out", fix="pass one label per image")
    y_dev = y.to(rob.device)
    opts = dict(direction_options or {})
    jump_seed = int(seed) + JUMP_SEED_OFFSET

    if d is None:
        d = get_direction(rob, x, y_dev, direction, seed=seed, custom=custom, **opts)
    if jump == "random":
        u = random_signs(tuple(x.shape), jump_seed, dtype=x.dtype, device=x.device)
    elif jump == "orthogonal":
        u = orthogonal_to(random_signs(tuple(x.shape), jump_seed, dtype=x.dtype, device=x.device), d)
    else:
        u = fgsm_sign(rob, x, y_dev)
    fixed_after = keep_direction or direction == "custom"
    if fixed_after and _parallel(u, d).any():
        raise RobcurveError("the jump is parallel to the direction travelled after it (the same line measures nothing)",
                            where=f"jump_out(jump={jump!r}, direction={direction!r}, keep_direction={keep_direction})",
                            fix="choose another jump, or recompute the direction after the jump (keep_direction=False)")
    x_j = x + eta * u
    if clamp:
        x_j = x_j.clamp(0.0, 1.0)
    d_after = d if keep_direction else get_direction(rob, x_j, y_dev, direction, seed=seed, custom=custom, **opts)
    parallel = _parallel(u, d_after).cpu()

    ckw = dict(region=region, ladder=ladder)
    tkw = dict(T=T, E=E, clamp=clamp, chunk_size=chunk_size, y=y)
    dkw = dict(h=h, tol=tol, eps_max=eps_max, chunk=chunk_size, clamp=clamp)
    curv_b = curvature_before if curvature_before is not None else curvature(trajectory(rob, x, d, **tkw), **ckw)  # type: ignore[arg-type]
    curv_a = curvature(trajectory(rob, x_j, d_after, **tkw), **ckw)  # type: ignore[arg-type]
    td_b = travel_distance(rob, x, y, d, **dkw)  # type: ignore[arg-type]
    td_a = travel_distance(rob, x_j, y, d_after, **dkw)  # type: ignore[arg-type]

    pred_x = predict(rob, x, chunk_size).cpu()
    pred_j = predict(rob, x_j, chunk_size).cpu()
    # the jump actually taken: η u, or x' − x after clamping
    jv = ((x_j - x) if clamp else u).flatten(1).to(torch.float64).cpu() * (1.0 if clamp else float(eta))
    j_linf, j_l2 = jv.abs().amax(1), jv.norm(dim=1)
    ok = td_b.correct & ~td_b.censored & ~td_a.censored & (td_b.eps > 0)
    nan = torch.full_like(j_linf, float("nan"))
    ratio = torch.where(ok, (j_linf + td_a.linf) / td_b.linf.clamp_min(1e-300), nan)
    ratio_l2 = torch.where(ok, (j_l2 + td_a.l2) / td_b.l2.clamp_min(1e-300), nan)
    settings = {"T": T, "E": E, "region": region, "h": h, "tol": tol, "eps_max": eps_max, "clamp": clamp,
                "direction_options": opts}
    return JumpOut(curv_b, curv_a, td_b, td_a, pred_j != pred_x, pred_j, j_linf, j_l2, ratio, ratio_l2, parallel,
                   float(eta), jump, direction, bool(keep_direction), int(seed), jump_seed, settings,
                   x_j.detach(), d_after.detach())
