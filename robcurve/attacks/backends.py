"""PGD and DeepFool through torchattacks and foolbox, behind robcurve's interface.

Each backend attack is an :class:`~robcurve.attacks.base.Attack` whose core hands the batch
to the library and converts its output, so the bookkeeping (device, eval mode, clean forward,
success check, distances, AttackResult) is robcurve's for every backend. The libraries are
imported on first use; a missing one raises :class:`RobcurveError` saying how to install it.

The model reaches the library through :class:`CountingModel`, which counts rows forwarded and
back-propagated (the libraries cannot say which sample a call served, so every sample gets the
batch mean) and applies ``autocast``. No class handed to torchattacks may be called ``RobModel``:
torchattacks treats a model whose class has that name as its own (MAIR) RobModel and then
un-normalises the inputs before and re-normalises the outputs after the attack, which would
silently corrupt an attack on a wrapper with normalisation inside (robcurve's wrapper is named
``RobcurveModel`` for that reason). docs/attacks.md lists the other differences.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import torch
from torch import Tensor, nn

from robcurve.attacks.base import (
    BACKEND_ADAPTERS,
    Attack,
    Counter,
    ModelFn,
    batches,
    canonical_norm,
)
from robcurve.errors import RobcurveError

_INSTALL = {
    "torchattacks": "pip install --no-deps torchattacks==3.5.1 (its requests pin is not needed)",
    "foolbox": "pip install foolbox==3.3.4 eagerpy",
}


def _import(lib: str) -> Any:
    try:
        return importlib.import_module(lib)
    except ImportError as e:
        raise RobcurveError(f"attack backend {lib!r} is not installed ({e})",
                            fix=f"{_INSTALL[lib]}, or use backend='robcurve'") from None


class CountingModel(nn.Module):
    """[0, 1] images -> logits, counting forward rows and backward rows through the output."""

    def __init__(self, f: ModelFn):
        super().__init__()
        self.net = f.model
        self._f = f
        self.rows_forward = 0
        self.rows_backward = 0
        self.eval()  # torchattacks restores the *adapter's* mode on the model after each call

    def _count_backward(self, rows: int) -> None:
        self.rows_backward += rows

    def forward(self, x: Tensor) -> Tensor:
        out = self._f(x)
        rows = int(x.shape[0])
        self.rows_forward += rows
        if out.requires_grad:
            out.register_hook(lambda g, rows=rows: self._count_backward(rows))
        return out

    def take(self) -> tuple[int, int]:
        counts = (self.rows_forward, self.rows_backward)
        self.rows_forward = self.rows_backward = 0
        return counts


def _fork_rng(x: Tensor):
    """Seed the global RNG (which the libraries draw from) without disturbing the caller's."""
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def _scalar(v: Any, name: str, lib: str) -> float:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise RobcurveError(f"{lib} takes one {name} for the whole batch, got a tensor of {v.numel()}",
                                fix=f"pass a float {name}, or use backend='robcurve' for per-sample budgets")
        v = float(v)
    return float(v)


class _BackendAttack(Attack):
    """Runs the library on every sample (library semantics: no skipping), in batches."""

    lib: str = ""

    def _make(self, model: CountingModel, x: Tensor) -> Any:
        raise NotImplementedError

    def _call(self, atk: Any, model: CountingModel, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _check(self, num_classes: int) -> None:
        pass

    def _attack(self, f, x, y, target, clean_logits, batch_size, ctr: Counter):
        _import(self.lib)
        if clean_logits.dim() == 2:
            self._check(clean_logits.shape[1])
        model = CountingModel(f)
        atk = self._make(model, x)
        x_adv = torch.empty_like(x)
        seed = int(self.params.get("seed", 0))
        with _fork_rng(x):
            torch.manual_seed(seed)
            for s in batches(len(x), batch_size):
                xb = self._call(atk, model, x[s], y[s], None if target is None else target[s])
                x_adv[s] = xb.detach().to(x.dtype)
                fw, bw = model.take()
                m = s.stop - s.start
                ctr.forwards[s] += round(fw / m)
                ctr.backwards[s] += round(bw / m)
        return x_adv, None, {}


# -- PGD ------------------------------------------------------------------------------------------
class _BackendPGD(_BackendAttack):
    name = "pgd"
    targeted_ok = True
    clean_pred_ok = True

    def __init__(self, eps: float, norm: str = "Linf", steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, targeted: bool = False, seed: int = 0,
                 early_stop: bool = False, loss: str = "ce"):
        super().__init__()
        self.eps = _scalar(eps, "eps", self.lib)
        self.norm = canonical_norm(norm)
        if loss != "ce":
            raise RobcurveError(f"{self.lib} PGD uses cross-entropy only, got loss={loss!r}",
                                fix="pass loss='ce', or use backend='robcurve' for the margin loss")
        if restarts != 1:
            raise RobcurveError(f"{self.lib} PGD has no restarts", fix="pass restarts=1, or use backend='robcurve'")
        if early_stop:
            raise RobcurveError(f"{self.lib} PGD has no early stop: every sample takes every step",
                                fix="pass early_stop=False, or use backend='robcurve'")
        self.steps = int(steps)
        self.step_size = 2.5 * self.eps / self.steps if step_size is None else _scalar(step_size, "step_size", self.lib)
        self.random_start = bool(random_start)
        self.params = dict(eps=self.eps, norm=self.norm, steps=self.steps, step_size=self.step_size,
                           random_start=self.random_start, restarts=1, targeted=bool(targeted), seed=int(seed),
                           early_stop=False, loss="ce", queries_counted="mean")


class TorchattacksPGD(_BackendPGD):
    """``torchattacks.PGD`` / ``PGDL2`` with ``alpha = step_size`` (default 2.5·eps/steps)."""

    backend = lib = "torchattacks"

    def _make(self, model, x):
        ta = _import("torchattacks")
        cls = ta.PGD if self.norm == "Linf" else ta.PGDL2
        return cls(model, eps=self.eps, alpha=self.step_size, steps=self.steps, random_start=self.random_start)

    def _call(self, atk, model, x, y, target):
        if target is not None:
            atk.set_mode_targeted_by_label(quiet=True)
            return atk(x, target)
        return atk(x, y)


class FoolboxPGD(_BackendPGD):
    """``foolbox.attacks.LinfPGD`` / ``L2PGD`` with ``abs_stepsize = step_size``; the clipped output."""

    backend = lib = "foolbox"

    def _make(self, model, x):
        fb = _import("foolbox")
        self._fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        cls = fb.attacks.LinfPGD if self.norm == "Linf" else fb.attacks.L2PGD
        return cls(abs_stepsize=self.step_size, steps=self.steps, random_start=self.random_start)

    def _call(self, atk, model, x, y, target):
        fb = _import("foolbox")
        crit = fb.criteria.TargetedMisclassification(target) if target is not None else fb.criteria.Misclassification(y)
        _, clipped, _ = atk(self._fmodel, x, crit, epsilons=self.eps)
        return clipped


# -- DeepFool ------------------------------------------------------------------------------------------
class _BackendDeepFool(_BackendAttack):
    name = "deepfool"

    def __init__(self, norm: str = "L2", steps: int = 50, overshoot: float = 0.02, candidates: int | None = 10):
        super().__init__()
        self.norm = canonical_norm(norm)
        self.steps, self.overshoot, self.candidates = int(steps), float(overshoot), candidates
        self.params = dict(norm=self.norm, steps=self.steps, overshoot=self.overshoot, candidates=candidates,
                           queries_counted="mean")


class TorchattacksDeepFool(_BackendDeepFool):
    """``torchattacks.DeepFool``: L2 only, all classes, one image at a time."""

    backend = lib = "torchattacks"

    def __init__(self, norm: str = "L2", steps: int = 50, overshoot: float = 0.02, candidates: int | None = None):
        super().__init__(norm, steps, overshoot, candidates)
        if self.norm != "L2":
            raise RobcurveError("torchattacks DeepFool is L2 only", fix="pass norm='L2', or use backend='robcurve' or 'foolbox'")
        self.params["candidates"] = "all"

    def _make(self, model, x):
        return _import("torchattacks").DeepFool(model, steps=self.steps, overshoot=self.overshoot)

    def _check(self, num_classes):
        if self.candidates is not None and self.candidates < num_classes:
            raise RobcurveError(f"torchattacks DeepFool always uses all {num_classes} classes, got candidates={self.candidates}",
                                fix="pass candidates=None, or use backend='robcurve' or 'foolbox'")

    def _call(self, atk, model, x, y, target):
        return atk(x, y)


class FoolboxDeepFool(_BackendDeepFool):
    """``foolbox.attacks.L2DeepFoolAttack`` / ``LinfDeepFoolAttack`` (loss='logits'); the raw output."""

    backend = lib = "foolbox"

    def _make(self, model, x):
        fb = _import("foolbox")
        self._fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        cls = fb.attacks.L2DeepFoolAttack if self.norm == "L2" else fb.attacks.LinfDeepFoolAttack
        return cls(steps=self.steps, candidates=self.candidates, overshoot=self.overshoot, loss="logits")

    def _call(self, atk, model, x, y, target):
        fb = _import("foolbox")
        raw, _, _ = atk(self._fmodel, x, fb.criteria.Misclassification(y), epsilons=None)
        return raw


BACKEND_ATTACKS: dict[str, dict[str, type[Attack]]] = {
    "torchattacks": {"pgd": TorchattacksPGD, "deepfool": TorchattacksDeepFool},
    "foolbox": {"pgd": FoolboxPGD, "deepfool": FoolboxDeepFool},
}


def backend_class(backend: str, name: str) -> type[Attack]:
    table = BACKEND_ATTACKS.get(backend)
    if table is None:
        raise RobcurveError(f"unknown attack backend {backend!r}", fix=f"choose one of: robcurve, {', '.join(BACKEND_ATTACKS)}")
    if name not in table:
        raise RobcurveError(f"attack {name!r} has no {backend} backend", fix=f"use backend='robcurve' (the {backend} backend runs: {', '.join(table)})")
    return table[name]


for _backend in BACKEND_ATTACKS:
    BACKEND_ADAPTERS[_backend] = functools.partial(backend_class, _backend)
