"""Jump-out as an attack (METHOD.md §4) behind the common interface.

The adversarial example is the first label flip found after the jump: x' + ε' d', with
x' = x + η u and ε' the travel distance along the recomputed direction d' (plus the
bisection tolerance, so the point lies past the boundary), clipped to [0, 1]. Success is
checked on that image by the interface like for every attack; a censored travel leaves the
image at x'. Per-sample curvature and shortcut ratios stay available through
:func:`robcurve.geometry.jump_out`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from robcurve.attacks.base import Attack, Counter, ModelFn
from robcurve.geometry import jump_out


class JumpOutAttack(Attack):
    name: ClassVar[str] = "jumpout"

    def __init__(self, eta: float = 2 / 255, jump: str = "random", direction: str = "fgsm", keep_direction: bool = False,
                 seed: int = 0, h: float = 1e-3, tol: float = 1e-6, eps_max: float = 1.0, T: int = 21, E: float = 0.1):
        super().__init__()
        self.params = dict(eta=eta, jump=jump, direction=direction, keep_direction=keep_direction, seed=seed, h=h, tol=tol,
                           eps_max=eps_max, T=T, E=E)

    def _attack(self, f: ModelFn, x: Tensor, y: Tensor, target: Tensor | None, clean_logits: Tensor,
                batch_size: int, ctr: Counter) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        p = self.params
        res = jump_out(f.model, x, y, eta=p["eta"], jump=p["jump"], direction=p["direction"],
                       keep_direction=p["keep_direction"], seed=p["seed"], T=p["T"], E=p["E"], h=p["h"], tol=p["tol"],
                       eps_max=p["eps_max"], chunk_size=max(batch_size, 1) * 16)
        ta = res.travel_after
        step = torch.where(ta.censored, torch.zeros_like(ta.eps), ta.eps + ta.tol).to(x.device, x.dtype)
        x_adv = (res.x_jump + step.view(-1, *([1] * (x.dim() - 1))) * res.direction_after).clamp(0, 1)
        tb = res.travel_before
        if ta.forwards is not None and tb.forwards is not None:  # per sample: both travel searches
            ctr.forwards += (ta.forwards + tb.forwards).to(ctr.forwards.device)
        else:
            ctr.forwards += int(ta.n_forward + tb.n_forward) // max(len(y), 1)
        return x_adv, None, {}
