"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016) in L2 and L∞, fully batched.

Per step, for every sample still classified correctly: linearise the logit differences
``f_k - f_y`` for the candidate classes ``k`` (the ``candidates - 1`` classes with the highest
clean logits besides the label; ``candidates=None``: all), take the nearest linearised
boundary ``l = argmin_k |f_k - f_y| / ||∇(f_k - f_y)||_q`` (q = 2 for L2, q = 1 for L∞), and add
the step ``r = (|f_l - f_y| / ||w_l||_q + 1e-4) · w_l / ||w_l||_2`` (L2) or
``(… + 1e-4) · sign(w_l)`` (L∞) to the *accumulated* perturbation ``r_tot``. The iterate is
``clip(x + (1 + overshoot) · r_tot, 0, 1)``: the overshoot multiplies the accumulated
perturbation as in the paper's reference code (torchattacks instead multiplies each step
and adds it to the clipped iterate). The 1e-4 is the reference code's numerical margin
(foolbox keeps it too).

Speed (docs/attacks.md has the measurements):

* **Early exit**: samples leave the batch as soon as they are misclassified.
* **One forward per step**: the candidate gradients of a step are vector-Jacobian products
  through one retained graph (``grad_mode="loop"``, default: one backward pass per candidate,
  keeping only the best gradient so far per sample; ``grad_mode="vmap"``: one batched
  backward, ``is_grads_batched``). The clean logits come from the forward of the first step
  (no separate clean forward) unless the caller passes ``clean_logits``.
* **Candidate restriction** (``restrict=3.0``, default): the first step takes the gradients of
  all candidates. Every later step knows every candidate's logit gap ``|f_k - f_y|`` exactly
  (from its forward) and the norm ``||w_k||_q`` from the last step that computed that
  candidate's gradient; it computes gradients only for the candidates whose *estimated*
  distance ``|f_k - f_y| / ||w_k||_q(last)`` is within ``restrict`` times the smallest
  estimate, and takes the nearest among those. The result equals the all-candidate run
  unless some class's gradient norm changes by a factor of about ``restrict`` between the step
  that last computed it and a step where it becomes the nearest; measured on six models the
  largest factor needed was 2.05 (docs/attacks.md). ``restrict=None`` computes every
  candidate at every step (the reference the tests compare against).
* **Smaller graphs**: when few rows of the step's graph still need gradients (finished samples,
  or samples with fewer candidates left), the rows that do are forwarded again on their own
  if that is cheaper than back-propagating through the whole graph.

Queries per sample: 1 forward per step (the first one doubling as the clean forward; +1 for
each re-forward onto a smaller graph), 1 backward per candidate gradient taken, and 1 forward
at the final iterate for samples that used every step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robcurve.attacks.base import Attack, AttackResult, Counter, ModelFn, batches, canonical_norm
from robcurve.errors import RobcurveError

GRAD_MODES = ("auto", "loop", "vmap")

#: cost of a backward pass through a row relative to a forward (measured 0.85-1.8 on the zoo
#: and timm models with frozen parameters); decides when a re-forward onto fewer rows pays
_BACKWARD_COST = 1.0


class DeepFool(Attack):
    """Minimal-perturbation attack; see the module docstring. Untargeted only."""

    name = "deepfool"
    fuses_clean_forward = True

    def __init__(self, norm: str = "L2", steps: int = 50, overshoot: float = 0.02, candidates: int | None = 10,
                 grad_mode: str = "auto", restrict: float | None = 3.0):
        super().__init__()
        self.norm = canonical_norm(norm)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise RobcurveError(f"steps must be an int >= 1, got {steps!r}", fix="e.g. steps=50")
        if not isinstance(overshoot, int | float) or not math.isfinite(overshoot) or overshoot < 0:
            raise RobcurveError(f"overshoot must be a number >= 0, got {overshoot!r}", fix="e.g. overshoot=0.02")
        if candidates is not None and (isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 2):
            raise RobcurveError(f"candidates must be an int >= 2 or None (all classes), got {candidates!r}", fix="e.g. candidates=10")
        if grad_mode not in GRAD_MODES:
            raise RobcurveError(f"unknown grad_mode {grad_mode!r}", fix=f"choose one of {list(GRAD_MODES)}")
        if restrict is not None and (isinstance(restrict, bool) or not isinstance(restrict, int | float)
                                     or not restrict >= 1):
            raise RobcurveError(f"restrict must be a number >= 1 or None (every candidate at every step), got {restrict!r}",
                                fix="e.g. restrict=3.0")
        self.steps, self.overshoot, self.candidates = steps, float(overshoot), candidates
        self.grad_mode = "loop" if grad_mode == "auto" else grad_mode
        self.restrict = None if restrict is None or math.isinf(restrict) else float(restrict)
        self.params = dict(norm=self.norm, steps=steps, overshoot=self.overshoot, candidates=candidates,
                           grad_mode=self.grad_mode, restrict=self.restrict)

    # -- driver ---------------------------------------------------------------------------------
    def _attack(self, f, x, y, target, clean, batch_size, ctr):
        if clean is not None:  # the caller's (or the interface's) clean logits: skip the misclassified
            if clean.dim() != 2:
                raise RobcurveError("DeepFool needs the clean logits (the candidate classes are their top ones)",
                                    fix="pass clean_logits=<(N, K) logits or probabilities>, or neither")
            return super()._attack(f, x, y, target, clean, batch_size, ctr)
        n = len(x)
        x_adv = x.clone()
        clean_out: Tensor | None = None
        logits: Tensor | None = None
        for s in batches(n, batch_size):
            local = Counter(s.stop - s.start, x.device)
            xb, lb, cb = self._run(f, x[s], y[s], None, local)
            ctr.forwards[s] += local.forwards
            ctr.backwards[s] += local.backwards
            if clean_out is None or logits is None:
                clean_out = cb.new_empty(n, cb.shape[1])
                logits = lb.new_empty(n, lb.shape[1])
            x_adv[s], logits[s], clean_out[s] = xb, lb, cb
        return x_adv, logits, {"clean_logits": clean_out}

    def run(self, f: ModelFn, x: Tensor, y: Tensor, target: Tensor | None, clean_logits: Tensor,
            ctr: Counter) -> tuple[Tensor, Tensor]:
        x_adv, logits, _ = self._run(f, x, y, clean_logits, ctr)
        return x_adv, logits

    # -- core -------------------------------------------------------------------------------------
    def _run(self, f: ModelFn, x: Tensor, y: Tensor, clean: Tensor | None, ctr: Counter) -> tuple[Tensor, Tensor, Tensor]:
        """DeepFool on one batch; returns (x_adv, logits at x_adv, clean logits).

        ``clean``: clean logits (n, K), or None to take them from the first step's forward
        (which is then also the clean forward).
        """
        n = len(x)
        view = (-1,) + (1,) * (x.dim() - 1)
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        logits_out: Tensor | None = None if clean is None else clean.clone()
        cand: Tensor | None = None
        qnorm: Tensor | None = None  # (n, k) last computed q-norm of each candidate's gradient
        active = torch.arange(n, device=x.device)
        for step in range(self.steps):
            xi = x_adv[active].requires_grad_(True)
            out = f(xi)
            ctr.forwards[active] += 1
            od = out.detach()
            if clean is None:  # the first forward is the clean one
                clean = od.float().clone()
                self._check_classes(clean.shape[1], y, None)
                logits_out = clean.clone()
            assert logits_out is not None
            if cand is None:
                num_classes = clean.shape[1]
                k = (num_classes if self.candidates is None else min(self.candidates, num_classes)) - 1
                masked = clean.clone()
                masked.scatter_(1, y[:, None], -math.inf)
                cand = masked.topk(k, dim=1).indices  # (n, k), most likely first
                qnorm = torch.full((n, k), math.inf, dtype=torch.float32, device=x.device)
            assert qnorm is not None
            done = od.argmax(1) != y[active]
            if done.any():
                logits_out[active[done]] = od[done].float()
            keep = (~done).nonzero().flatten()  # positions (rows of `out`) still correct
            if not len(keep):
                active = active[:0]
                break
            rows = active[keep]
            # candidates to differentiate: all at the first step, else the restricted set
            gaps = (od[keep].gather(1, cand[rows]) - od[keep].gather(1, y[rows, None])).abs().float()
            if self.restrict is None or step == 0:
                sel = torch.ones_like(gaps, dtype=torch.bool)
            else:
                est = gaps / (qnorm[rows] + 1e-8)
                sel = est <= self.restrict * est.amin(1, keepdim=True)
            best_d, best_g, best_n = self._nearest(f, x_adv, xi, out, keep, rows, cand, y, gaps, sel, qnorm, ctr)
            active = rows
            if self.norm == "L2":
                stp = ((best_d + 1e-4) / (best_n + 1e-8)).view(view) * best_g
            else:
                stp = (best_d + 1e-4).view(view) * best_g.sign()
            r_tot[active] += stp.to(r_tot.dtype)
            x_adv[active] = torch.clamp(x[active] + (1.0 + self.overshoot) * r_tot[active], 0, 1)
        if len(active):
            assert logits_out is not None
            with torch.no_grad():
                logits_out[active] = f(x_adv[active]).float()
            ctr.forwards[active] += 1
        assert logits_out is not None and clean is not None
        return x_adv, logits_out, clean

    # -- nearest linearised boundary among the selected candidates ---------------------------------
    def _nearest(self, f: ModelFn, x_adv: Tensor, xi: Tensor, out: Tensor, keep: Tensor, rows: Tensor, cand: Tensor,
                 y: Tensor, gaps: Tensor, sel: Tensor, qnorm: Tensor, ctr: Counter) -> tuple[Tensor, Tensor, Tensor]:
        """(distance, gradient, its L2 norm) of the nearest selected candidate per row of ``rows``.

        ``out`` is the step's graph over ``xi`` (rows ``keep`` of it are still to attack);
        ``sel`` (m, k) marks the candidates to differentiate per row. Candidate ``j`` of a row
        is compared in candidate order with a strict ``<`` (ties keep the more likely class),
        as an argmin over all candidates would. Updates ``qnorm`` for every gradient taken.
        """
        m, k = sel.shape
        # pack each row's selected candidates to the front, keeping their order
        order = torch.sort((~sel).to(torch.int8), dim=1, stable=True).indices  # (m, k)
        n_sel = sel.sum(1)
        slots = int(n_sel.max())
        slot_pos = order[:, :slots]  # (m, S): candidate position per slot
        valid = torch.arange(slots, device=sel.device).view(1, -1) < n_sel.view(-1, 1)  # (m, S)
        slot_cls = cand[rows].gather(1, slot_pos)  # (m, S): class per slot
        ar = torch.arange(m, device=sel.device)
        best_d = torch.full((m,), math.inf, dtype=torch.float32, device=sel.device)
        best_n = torch.zeros(m, dtype=torch.float32, device=sel.device)
        best_g = torch.zeros((m,) + tuple(xi.shape[1:]), dtype=xi.dtype, device=xi.device)
        if self.grad_mode == "vmap":
            if len(keep) != len(out):  # finished rows take no part: a graph of the rest
                xi = x_adv[rows].requires_grad_(True)
                out = f(xi)
                ctr.forwards[rows] += 1
            v = torch.zeros(slots, m, out.shape[1], dtype=out.dtype, device=out.device)
            w = valid.T.to(out.dtype)  # (S, m)
            v.scatter_(2, slot_cls.T.unsqueeze(2), w.unsqueeze(2))
            v.scatter_add_(2, y[rows].view(1, m, 1).expand(slots, m, 1), -w.unsqueeze(2))
            (g,) = torch.autograd.grad(out, xi, v, is_grads_batched=True)  # (S, m, ...)
            ctr.backwards[rows] += n_sel
            for j in range(slots):
                self._update(j, g[j], valid[:, j], slot_pos[:, j], gaps, ar, best_d, best_g, best_n, qnorm, rows)
        else:
            graph = keep  # rows of `out` (positions into xi) that the current graph holds, per row of `rows`
            g_rows = len(out)
            for j in range(slots):
                need = valid[:, j]
                n_need = int(need.sum())
                left = slots - j  # backward passes still to take (each over the graph's rows)
                if n_need * (1.0 / _BACKWARD_COST + left) < g_rows * left:  # a smaller graph pays
                    sub = need.nonzero().flatten()
                    xi = x_adv[rows[sub]].requires_grad_(True)
                    out = f(xi)
                    ctr.forwards[rows[sub]] += 1
                    graph = torch.full((m,), -1, dtype=torch.long, device=sel.device)
                    graph[sub] = torch.arange(len(sub), device=sel.device)
                    g_rows = len(sub)
                at = need.nonzero().flatten()  # rows of `rows` that take this slot
                pos = graph[at]  # their rows in the current graph
                cls = slot_cls[at, j]
                diff = out[pos].gather(1, cls[:, None]).squeeze(1) - out[pos].gather(1, y[rows[at], None]).squeeze(1)
                (g,) = torch.autograd.grad(diff.sum(), xi, retain_graph=j < slots - 1)
                ctr.backwards[rows[at]] += 1
                gj = torch.zeros_like(best_g)
                gj[at] = g[pos]
                self._update(j, gj, need, slot_pos[:, j], gaps, ar, best_d, best_g, best_n, qnorm, rows)
        l2n = best_n if self.norm == "L2" else best_g.flatten(1).norm(p=2, dim=1)
        return best_d, best_g, l2n

    def _update(self, j: int, g: Tensor, valid: Tensor, pos: Tensor, gaps: Tensor, ar: Tensor, best_d: Tensor,
                best_g: Tensor, best_n: Tensor, qnorm: Tensor, rows: Tensor) -> None:
        """Fold slot ``j``'s gradients ``g`` (m, ...) into the running best, in place."""
        flat = g.flatten(1)
        qn = (flat.norm(p=2, dim=1) if self.norm == "L2" else flat.abs().sum(1)).float()
        d = gaps[ar, pos] / (qn + 1e-8)
        better = valid & (d < best_d)  # strict: ties keep the more likely class, as argmin does
        best_d.copy_(torch.where(better, d, best_d))
        best_n.copy_(torch.where(better, qn, best_n))
        best_g.copy_(torch.where(better.view((-1,) + (1,) * (g.dim() - 1)), g, best_g))
        upd = valid.nonzero().flatten()
        qnorm[rows[upd], pos[upd]] = qn[upd]


def deepfool(model: nn.Module, x: Tensor, y: Tensor, norm: str = "L2", steps: int = 50, overshoot: float = 0.02,
             candidates: int | None = 10, batch_size: int | None = None, *, grad_mode: str = "auto",
             restrict: float | None = 3.0, device: torch.device | str | None = None,
             autocast: bool | torch.dtype = False, clean_logits: Tensor | None = None) -> AttackResult:
    """DeepFool on images ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,).

    Returns an :class:`AttackResult` whose ``l2`` (or ``linf``) is an upper bound on the
    distance to the nearest decision boundary for every sample with ``success``.
    ``restrict``: candidate restriction factor after the first step (None: every candidate at
    every step); ``clean_logits``: the caller's clean logits (N, K), else they come from the
    first step's forward.
    """
    atk = DeepFool(norm=norm, steps=steps, overshoot=overshoot, candidates=candidates, grad_mode=grad_mode,
                   restrict=restrict)
    return atk(model, x, y, batch_size=batch_size, device=device, autocast=autocast, clean_logits=clean_logits)
