"""Projected gradient descent (Madry et al. 2018) in L∞ and L2, and the PGD distance.

All budgets are in [0, 1] pixel units.

* **Loss** (``loss=``): ``"ce"`` (default of :func:`pgd`): cross-entropy at the label
  (untargeted, ascended) or at the target (targeted, descended), averaged over the batch rows
  as torchattacks does. ``"margin"`` (default of :func:`pgd_distance`): the logit margin of
  Carlini and Wagner, ``max_{j != y} z_j - z_y`` (ascended; targeted: ``max_{j != t} z_j - z_t``,
  descended), summed over rows. The margin follows the nearest competing class only, so PGD
  with it comes close to the smallest successful budget (on a linear model the exact one);
  cross-entropy mixes the directions of all classes by their softmax weights and overestimates
  it (measured on a linear 10-class model: median 1.28x the exact L∞ distance). For the sign
  (L∞) and normalised (L2) steps the row weighting (mean or sum) does not matter.

* **Step size**: default ``2.5 * eps / steps`` (Madry et al.'s rule; torchattacks' default is
  a fixed 2/255, foolbox's ``0.01/0.3 * eps`` in L∞ and ``0.025 * eps`` in L2).
* **Random start** (seeded): L∞ uniform in [-ε, ε] per pixel; L2 a Gaussian direction with
  radius uniform in [0, ε] (torchattacks' rule; foolbox samples uniformly in the ball). The
  noise is drawn for the whole input from ``torch.Generator(device).manual_seed(seed)``, so a
  sample's start depends on its position in the input and ``seed`` only, not on the batch
  size, the other samples' budgets or which samples are still being attacked. On the CPU it is
  bit-identical to torchattacks' draw after ``torch.manual_seed(seed)``.
* **Early stop** (``early_stop=True``, default): a sample that is adversarial (misclassified,
  or at its target) at the start or at any step stops moving and keeps that point; its
  remaining steps are not computed. ``early_stop=False`` is torchattacks' algorithm exactly:
  every sample, even one misclassified from the start, takes all steps and the last iterate
  is returned (it may have stepped back across the boundary).
* **Restarts**: restart ``r`` re-attacks only the samples no earlier restart fooled, from the
  next random start of the same generator; per sample the best run is kept (a success over a
  failure; among failures the higher loss).
* **Feasibility**: every iterate is projected onto the ε-ball around x and clipped to [0, 1]
  (L2: scaled back onto the ball; clipping to [0, 1] can only shorten it), so ``linf <= eps``
  and ``l2 <= eps`` hold up to one float32 rounding. A budget of 0 leaves a sample untouched
  (it is not attacked).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robcurve.attacks.base import (
    Attack,
    AttackResult,
    Counter,
    ModelFn,
    PGDDistanceResult,
    _check_params,
    as_pred,
    batches,
    canonical_norm,
    is_success,
)
from robcurve.errors import RobcurveError
from robcurve.validate import check_budget


def _check_int(v: Any, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise RobcurveError(f"{name} must be an int >= {lo}, got {v!r}", fix=f"pass {name}={max(lo, 1)} or more")
    return v


def _check_budget(v: Any, name: str) -> float | Tensor:
    if isinstance(v, Tensor):
        v = v.detach().flatten().double()
        if v.numel() == 1:
            v = float(v)
    elif isinstance(v, list | tuple):
        v = torch.tensor(v, dtype=torch.float64)
    if isinstance(v, Tensor):
        if not torch.isfinite(v).all() or (v < 0).any():
            raise RobcurveError(f"{name} must be finite and >= 0", fix=f"pass {name} as a float or a tensor (N,) of budgets >= 0")
        return v
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise RobcurveError(f"{name} must be a number or a tensor (N,), got {v!r}", fix=f"e.g. {name}=8/255") from None
    if not math.isfinite(v) or v < 0:
        raise RobcurveError(f"{name} must be finite and >= 0, got {v}", fix=f"e.g. {name}=8/255")
    return v


def _per_sample(v: float | Tensor, n: int, device: torch.device, name: str) -> Tensor:
    if isinstance(v, Tensor):
        if v.numel() != n:
            raise RobcurveError(f"{name} has {v.numel()} entries for {n} images", fix=f"pass one {name} per image or a single float")
        return v.to(device=device, dtype=torch.float64)
    return torch.full((n,), float(v), dtype=torch.float64, device=device)


def _describe(v: float | Tensor | None) -> Any:
    return v if not isinstance(v, Tensor) else "per-sample"


def _rows(t: Tensor, idx: Tensor, whole: bool) -> Tensor:
    """``t[idx]``, or ``t`` itself when ``idx`` is every row in order (no copy)."""
    return t if whole else t[idx]


LOSSES = ("ce", "margin")


def _check_loss(loss: Any) -> str:
    if loss not in LOSSES:
        raise RobcurveError(f"unknown PGD loss {loss!r}", fix=f"use one of {list(LOSSES)}")
    return str(loss)


def margin(logits: Tensor, goal: Tensor) -> Tensor:
    """(n,) ``max_{j != goal} z_j - z_goal`` per row of logits (n, K); > 0: not classified as goal."""
    z = logits.float()
    other = z.scatter(1, goal[:, None], -math.inf).amax(1)
    return other - z.gather(1, goal[:, None]).squeeze(1)


class PGD(Attack):
    """PGD at a fixed budget ``eps`` (float, or a tensor (N,) of per-sample budgets).

    See the module docstring for the defaults, the loss, early stop, restarts and the random
    start. Queries per sample: 1 clean forward (none when the caller passes ``clean_logits`` or
    ``clean_pred``), then per step 1 forward + 1 backward, then 1 forward at the final iterate
    (early-stopped samples: the forward of the step they stopped at).
    """

    name = "pgd"
    targeted_ok = True
    clean_pred_ok = True

    def __init__(self, eps: float | Tensor, norm: str = "Linf", steps: int = 10, step_size: float | Tensor | None = None,
                 random_start: bool = True, restarts: int = 1, targeted: bool = False, seed: int = 0,
                 early_stop: bool = True, loss: str = "ce"):
        super().__init__()
        self.norm = canonical_norm(norm)

        check_budget("eps", eps, self.norm)  # L-inf budgets in [0, 1] pixel units ("did you mean 8/255?")
        self.eps = _check_budget(eps, "eps")
        self.steps = _check_int(steps, "steps", 1)
        self.step_size = None if step_size is None else _check_budget(step_size, "step_size")
        self.random_start = bool(random_start)
        self.restarts = _check_int(restarts, "restarts", 1)
        self.targeted = bool(targeted)
        self.seed = int(seed)
        self.early_stop = bool(early_stop)
        self.loss = _check_loss(loss)
        self.params = dict(eps=_describe(self.eps), norm=self.norm, steps=self.steps,
                           step_size=_describe(self.step_size) if step_size is not None else "2.5*eps/steps",
                           random_start=self.random_start, restarts=self.restarts, targeted=self.targeted,
                           seed=self.seed, early_stop=self.early_stop, loss=self.loss)

    def _attack(self, f, x, y, target, clean, batch_size, ctr):
        eps = _per_sample(self.eps, len(x), x.device, "eps")
        x_adv, pred = self._pgd(f, x, y, target, clean, batch_size, ctr, eps)
        return x_adv, pred, {}

    # -- driver: restarts outside, batches inside -----------------------------------------------
    def _noise(self, g: torch.Generator, x: Tensor, eps: Tensor) -> Tensor:
        view = (len(x),) + (1,) * (x.dim() - 1)
        e = eps.to(x.dtype).view(view)
        if self.norm == "Linf":
            u = torch.empty_like(x).uniform_(generator=g)
            return torch.addcmul(-e, u, 2 * e)  # bit-identical to uniform_(-e, e)
        d = torch.empty_like(x).normal_(generator=g)
        nrm = d.flatten(1).norm(p=2, dim=1).view(view)
        r = torch.zeros_like(nrm).uniform_(0, 1, generator=g)
        return d * (r / nrm * e)

    def _score(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """(n,) the attack's objective per row, higher = closer to the goal (restarts keep the best)."""
        if self.loss == "margin":
            return -margin(logits, target) if target is not None else margin(logits, y)
        if target is not None:
            return -F.cross_entropy(logits.float(), target, reduction="none")
        return F.cross_entropy(logits.float(), y, reduction="none")

    def _objective(self, out: Tensor, goal: Tensor) -> Tensor:
        """Scalar loss whose gradient PGD follows (ascended untargeted, descended targeted)."""
        if self.loss == "margin":
            return margin(out, goal).sum()
        return F.cross_entropy(out.float(), goal)

    def _pgd(self, f: ModelFn, x: Tensor, y: Tensor, target: Tensor | None, clean: Tensor,
             batch_size: int, ctr: Counter, eps: Tensor) -> tuple[Tensor, Tensor]:
        """PGD on every sample with budget ``eps`` (n,) > 0; returns (x_adv, predicted class at x_adv).

        ``clean``: clean logits (n, K) or predictions (n,). Samples not attacked (budget 0, or
        adversarial from the start under early stop) keep ``x`` and their clean prediction;
        ``x_adv`` is ``x`` itself when no sample moved and the batch's own tensor when one batch
        covered every sample (no copies).
        """
        n = len(x)
        if self.step_size is None:
            alpha = 2.5 * eps / self.steps
        else:
            alpha = _per_sample(self.step_size, n, x.device, "step_size")
        pred = as_pred(clean).clone()
        best_succ = is_success(pred, y, target)
        best_score = torch.full((n,), -math.inf, device=x.device)
        tried = torch.zeros(n, dtype=torch.bool, device=x.device)
        todo = eps > 0
        if self.early_stop:
            todo &= ~best_succ
        x_adv: Tensor | None = None
        g = torch.Generator(device=x.device).manual_seed(self.seed)
        for _ in range(self.restarts):
            idx_all = todo.nonzero().flatten()
            if not len(idx_all):
                break
            noise = self._noise(g, x, eps) if self.random_start else None
            for s in batches(len(idx_all), batch_size):
                idx = idx_all[s]
                whole = len(idx) == n  # every sample in this batch: no gathers, no scatters
                tb = None if target is None else _rows(target, idx, whole)
                local = Counter(len(idx), x.device)
                xb, lb = self.run_batch(f, _rows(x, idx, whole), _rows(y, idx, whole), tb, _rows(eps, idx, whole),
                                        _rows(alpha, idx, whole), None if noise is None else _rows(noise, idx, whole),
                                        local)
                if whole:
                    ctr.forwards += local.forwards
                    ctr.backwards += local.backwards
                else:
                    ctr.add(local, idx)
                yb = _rows(y, idx, whole)
                sb = is_success(lb, yb, tb)
                score = self._score(lb, yb, tb)
                old_s, old_score = best_succ[idx] & tried[idx], best_score[idx]
                better = ~tried[idx] | (sb & ~old_s) | (~sb & ~old_s & (score > old_score))
                if whole and x_adv is None and bool(better.all()):
                    x_adv = xb
                else:
                    if x_adv is None:
                        x_adv = x.clone()
                    x_adv[idx[better]] = xb[better]
                keep = idx[better]
                pred[keep] = lb.argmax(1)[better]
                best_succ[keep] = sb[better]
                best_score[keep] = score[better]
                tried[idx] = True
            todo &= ~best_succ
            if self.random_start is False:
                break  # a deterministic rerun from x cannot do better
        return (x if x_adv is None else x_adv), pred

    # -- core: one batch, one start ----------------------------------------------------------------
    def run_batch(self, f: ModelFn, x: Tensor, y: Tensor, target: Tensor | None, eps: Tensor, alpha: Tensor,
                  noise: Tensor | None, ctr: Counter) -> tuple[Tensor, Tensor]:
        """PGD from one start on one batch; returns (x_adv, logits at x_adv), both (n, ...)."""
        n = len(x)
        view = (n,) + (1,) * (x.dim() - 1)
        e = eps.to(x.dtype).view(view)
        a = alpha.to(x.dtype).view(view)
        if self.norm == "Linf" and n and bool((e == e[0]).all()) and bool((a == a[0]).all()):
            # one budget and step for the batch (the usual case): scalar bounds, the same float32
            # values (clamp with a tensor of bounds costs ~60 us a step, a scalar ~10)
            e, a = float(e[0]), float(a[0])  # type: ignore[assignment]
        goal = target if target is not None else y
        sgn = -1.0 if target is not None else 1.0
        x_adv = (x + noise).clamp_(0, 1) if noise is not None else x.clone()
        logits_out: Tensor | None = None
        active = torch.arange(n, device=x.device)
        full = True  # every row still moving: plain tensors instead of index copies
        for _ in range(self.steps):
            xa = (x_adv if full else x_adv[active]).detach().requires_grad_(True)
            out = f(xa)
            if logits_out is None:
                logits_out = out.new_zeros(n, out.shape[1], dtype=torch.float32)
            if full:
                ctr.forwards += 1
            else:
                ctr.forwards[active] += 1
            keep = None
            if self.early_stop:
                done = is_success(out.detach(), y if full else y[active],
                                  None if target is None else (target if full else target[active]))
                if done.any():
                    logits_out[active[done]] = out.detach()[done].float()
                    if done.all():
                        active = active[:0]
                        break
                    keep = ~done
            rows = out if keep is None else out[keep]
            goal_a = (goal if full else goal[active]) if keep is None else goal[active][keep]
            (grad,) = torch.autograd.grad(self._objective(rows, goal_a), xa)
            xa = xa.detach()
            if keep is not None:
                active, xa, grad, full = active[keep], xa[keep], grad[keep], False
            if full:
                ctr.backwards += 1
                x_adv = self._step(xa, grad, x, e, a, sgn)
            else:
                ctr.backwards[active] += 1
                x_adv[active] = self._step(xa, grad, x[active], e if isinstance(e, float) else e[active],
                                           a if isinstance(a, float) else a[active], sgn)
        if len(active):
            with torch.no_grad():
                out = f(x_adv if full else x_adv[active]).float()
            if logits_out is None:
                logits_out = out.new_zeros(n, out.shape[1])
            if full:
                logits_out = out
                ctr.forwards += 1
            else:
                logits_out[active] = out
                ctr.forwards[active] += 1
        assert logits_out is not None
        return x_adv, logits_out

    def _step(self, xa: Tensor, grad: Tensor, x0: Tensor, e: Tensor | float, a: Tensor | float, sgn: float) -> Tensor:
        """One ascent step from ``xa`` along ``grad``, projected onto the ε-ball of x0 and [0, 1].

        ``e``, ``a``: per-row budgets and steps (n, 1, ...), or floats shared by every row (L∞).
        """
        if isinstance(e, float) and isinstance(a, float):  # L∞, one budget: scalar arithmetic
            xn = xa.add_(grad.sign_(), alpha=sgn * a)
            return xn.sub_(x0).clamp_(-e, e).add_(x0).clamp_(0, 1)
        assert isinstance(e, Tensor) and isinstance(a, Tensor)
        if self.norm == "Linf":
            xn = xa.addcmul_(a, grad.sign_(), value=sgn)  # xa and grad are this step's own tensors
            d = torch.clamp(xn.sub_(x0), min=-e, max=e)
            return d.add_(x0).clamp_(0, 1)
        view = e.shape
        gn = grad.flatten(1).norm(p=2, dim=1).view(view) + 1e-10
        xn = xa + sgn * a * (grad / gn)
        d = xn - x0
        dn = d.flatten(1).norm(p=2, dim=1).view(view)
        factor = torch.minimum(e / dn, torch.ones_like(dn))
        return torch.clamp(x0 + d * factor, min=0, max=1)


class PGDDistance(Attack):
    """Per sample, the smallest budget at which PGD succeeds (METHOD.md §3 "PGD distance").

    Bisection over the budget in [lo, hi], all samples advanced together: one batched PGD run
    per bisection step, each sample at the midpoint of its own bracket. The loss defaults to the
    logit margin (``loss="margin"``): it estimates the smallest budget far more tightly than
    cross-entropy (module docstring). PGD is not monotone in its budget in general; the bracket
    holds for the runs made, which are reproducible: PGD at ``budget`` (or ``budget_lo``) with
    the same seed and loss on the same input order reproduces the success (or failure).
    """

    name = "pgd-distance"
    targeted_ok = True
    clean_pred_ok = True
    result_class = PGDDistanceResult

    def __init__(self, norm: str = "Linf", lo: float = 0.0, hi: float | None = None, bisection_steps: int = 10,
                 steps: int = 10, step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 targeted: bool = False, seed: int = 0, early_stop: bool = True, loss: str = "margin"):
        super().__init__()
        self.norm = canonical_norm(norm)
        self.lo = float(_check_budget(lo, "lo"))
        self.hi = None if hi is None else float(_check_budget(hi, "hi"))
        if self.hi is not None and self.hi <= self.lo:
            raise RobcurveError(f"hi={self.hi} must exceed lo={self.lo}", fix="pass a larger hi")
        self.bisection_steps = _check_int(bisection_steps, "bisection_steps", 0)
        self.pgd = PGD(eps=1.0, norm=self.norm, steps=steps, step_size=step_size, random_start=random_start,
                       restarts=restarts, targeted=targeted, seed=seed, early_stop=early_stop, loss=loss)
        self.params = {k: v for k, v in self.pgd.params.items() if k != "eps"}
        self.params.update(lo=self.lo, hi=self.hi, bisection_steps=self.bisection_steps)

    def _attack(self, f, x, y, target, clean, batch_size, ctr):
        n, dev = len(x), x.device
        hi = self.hi if self.hi is not None else (0.5 if self.norm == "Linf" else 0.5 * math.sqrt(x[0].numel()))
        if hi <= self.lo:
            raise RobcurveError(f"hi={hi} must exceed lo={self.lo}", fix="pass a larger hi")
        self.params["hi"] = hi
        zero64 = torch.zeros((), dtype=torch.float64, device=dev)

        def run(mask: Tensor, eps: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
            e = torch.where(mask, torch.as_tensor(eps, dtype=torch.float64, device=dev), zero64)
            xa, pa = self.pgd._pgd(f, x, y, target, clean, batch_size, ctr, e)
            return xa, pa, is_success(pa, y, target) & mask

        pred0 = as_pred(clean)
        zero = is_success(pred0, y, target)
        x_best, pred_best = x.clone(), pred0.clone()
        budget = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
        lo_b = torch.full((n,), self.lo, dtype=torch.float64, device=dev)
        hi_b = torch.full((n,), hi, dtype=torch.float64, device=dev)
        budget[zero], lo_b[zero], hi_b[zero] = 0.0, 0.0, 0.0

        xa, pa, s_hi = run(~zero, hi)
        censored = ~zero & ~s_hi
        moved = s_hi | censored  # fooled at hi, or best effort at hi for the censored
        x_best[moved], pred_best[moved] = xa[moved], pa[moved]
        lo_b[censored] = hi
        active = s_hi.clone()
        if self.lo > 0 and active.any():
            xa, pa, s_lo = run(active, self.lo)
            x_best[s_lo], pred_best[s_lo] = xa[s_lo], pa[s_lo]
            hi_b[s_lo], lo_b[s_lo] = self.lo, 0.0
            active &= ~s_lo
        for _ in range(self.bisection_steps):
            if not active.any():
                break
            mid = (lo_b + hi_b) / 2
            xa, pa, s = run(active, mid)
            x_best[s], pred_best[s] = xa[s], pa[s]
            hi_b = torch.where(s, mid, hi_b)
            lo_b = torch.where(active & ~s, mid, lo_b)
        budget[s_hi] = hi_b[s_hi]
        return x_best, pred_best, {"budget": budget, "budget_lo": lo_b, "censored": censored}


# -- functional API ---------------------------------------------------------------------------
def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, norm: str = "Linf", steps: int = 10,
        step_size: float | Tensor | None = None, random_start: bool = True, restarts: int = 1,
        targeted: bool = False, target: Tensor | None = None, seed: int = 0, early_stop: bool = True,
        batch_size: int | None = None, *, loss: str = "ce", device: torch.device | str | None = None,
        autocast: bool | torch.dtype = False, clean_logits: Tensor | None = None,
        clean_pred: Tensor | None = None) -> AttackResult:
    """PGD attack on images ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,).

    ``eps``: budget in pixel units, a float or a tensor (N,); ``norm``: 'Linf' or 'L2';
    ``step_size``: default 2.5·eps/steps; ``target`` (N,): classes to reach (implies
    ``targeted``); ``loss``: ``"ce"`` (default, torchattacks' loss) or ``"margin"``.
    ``clean_logits`` (N, K) or ``clean_pred`` (N,): the model's clean outputs on ``x`` when
    the caller has them (the clean forward is then skipped). See the module docstring for
    early stop, restarts and the random start.
    """
    if target is not None:
        targeted = True
    atk = PGD(eps=eps, norm=norm, steps=steps, step_size=step_size, random_start=random_start, restarts=restarts,
              targeted=targeted, seed=seed, early_stop=early_stop, loss=loss)
    return atk(model, x, y, target=target, batch_size=batch_size, device=device, autocast=autocast,
               clean_logits=clean_logits, clean_pred=clean_pred)


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, **kwargs: Any) -> float:
    """Share of samples classified correctly clean and under PGD at budget ``eps`` (kwargs: :func:`pgd`)."""
    return pgd(model, x, y, eps, **kwargs).robust_accuracy


def pgd_distance(model: nn.Module, x: Tensor, y: Tensor, norm: str = "Linf", lo: float = 0.0, hi: float | None = None,
                 bisection_steps: int = 10, *, target: Tensor | None = None, batch_size: int | None = None,
                 device: torch.device | str | None = None, autocast: bool | torch.dtype = False,
                 clean_logits: Tensor | None = None, clean_pred: Tensor | None = None,
                 **pgd_kwargs: Any) -> PGDDistanceResult:
    """Per-sample smallest PGD budget by bisection; see :class:`PGDDistance`.

    ``pgd_kwargs``: steps, step_size, random_start, restarts, targeted, seed, early_stop, loss
    (default ``"margin"``). ``clean_logits``/``clean_pred``: as for :func:`pgd`.
    """
    _check_params(PGDDistance, pgd_kwargs, "pgd_distance")
    if target is not None:
        pgd_kwargs["targeted"] = True
    atk = PGDDistance(norm=norm, lo=lo, hi=hi, bisection_steps=bisection_steps, **pgd_kwargs)
    res = atk(model, x, y, target=target, batch_size=batch_size, device=device, autocast=autocast,
              clean_logits=clean_logits, clean_pred=clean_pred)
    assert isinstance(res, PGDDistanceResult)
    return res
