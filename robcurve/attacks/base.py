"""The attack interface: one call shape, one result type, one registry (METHOD.md §3).

Shape after foolbox: an attack is a small class holding its parameters; its public
``__call__`` does the bookkeeping once (input checks, device, eval mode, the clean forward,
batching, query counting, the success check, distances, timing) and each attack implements
only its core, :meth:`Attack.run`, on one batch.

Conventions (METHOD.md §0): images are (N, C, H, W) in [0, 1] pixel units, the model maps them
to logits (N, K) with any normalisation inside, and every distance is in pixel units.

**Query counting.** ``forwards[i]`` is the number of forward passes sample ``i`` took part
in, counting the clean forward (unless the caller passed ``clean_logits``/``clean_pred``, see
below) and the final check; ``backwards[i]`` is the number of vector-Jacobian products taken
for sample ``i`` (one per PGD step; one per DeepFool candidate gradient, however they are
batched). ``queries = forwards + backwards``. The torchattacks and foolbox backends cannot
attribute model calls to samples: there every sample gets the mean over the batch
(``params["queries_counted"] == "mean"``).

**Clean outputs from the caller.** ``clean_logits`` (N, K) (logits, or any scores with the
same order per row, e.g. probabilities: only the ranking is used) or ``clean_pred`` (N,)
replace the attack's own clean forward when the caller has measured the clean images already
(a benchmark run's ``clean`` measurement). ``clean_pred`` suffices for PGD and the PGD distance;
DeepFool needs the ranking of the classes (``clean_logits``) and otherwise takes its clean
logits from its own first step at no extra cost; other attacks forward the clean images
themselves when given only ``clean_pred``.

**Frozen parameters.** During an attack every parameter of the model has ``requires_grad``
switched off (and restored afterwards, like the train/eval flags): attacks only need input
gradients, and the backends' libraries then do not compute weight gradients either.
"""

from __future__ import annotations

import difflib
import inspect
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robcurve.errors import RobcurveError
from robcurve.naming import parse_norm
from robcurve.registry import Registry

#: Attack name -> attack class (lazy targets, resolved on first use).
ATTACKS: Registry[type[Attack]] = Registry("attack")
ATTACKS.add("pgd", "robcurve.attacks.pgd:PGD", norms=("Linf", "L2"), kind="fixed budget")
ATTACKS.add("deepfool", "robcurve.attacks.deepfool:DeepFool", norms=("L2", "Linf"), kind="minimal distance")
ATTACKS.add("pgd-distance", "robcurve.attacks.pgd:PGDDistance", norms=("Linf", "L2"), kind="minimal budget")
ATTACKS.add("jumpout", "robcurve.attacks.jumpout:JumpOutAttack", norms=("Linf",), kind="jump, then travel (METHOD.md §4)")

#: Backends of :func:`run_attack`: robcurve's own code, or a peer library through an adapter.
BACKENDS = ("robcurve", "torchattacks", "foolbox")
#: The peers' adapters, backend -> (attack name -> Attack class): robcurve.attacks.backends fills it on import
#: (the package imports it), so this module never imports the adapters (no import circle).
BACKEND_ADAPTERS: dict[str, Callable[[str], type[Attack]]] = {}

def canonical_norm(norm: str, allowed: tuple[str, ...] = ("Linf", "L2")) -> str:
    """'Linf'/'linf'/'inf' -> 'Linf'; 'L2'/'l2'/'2' -> 'L2'; anything else -> RobcurveError."""
    n = parse_norm(norm)
    c = n.value if n is not None else None
    if c is None or c not in allowed:
        raise RobcurveError(f"unknown or unsupported norm {norm!r}", fix=f"use one of {list(allowed)}")
    return c


# -- result ---------------------------------------------------------------------------------
@dataclass
class AttackResult:
    """What an attack returns; one entry per sample in every (N,) field.

    x_adv: adversarial images (N, C, H, W) in [0, 1], on the device the images came from.
    success: (N,) bool, the attack's goal holds at ``x_adv``: misclassified (untargeted) or
        classified as ``target`` (targeted). A sample misclassified from the start counts as
        a success of an untargeted attack with a zero perturbation.
    l2, linf: (N,) float64 norms of ``x_adv - x`` in [0, 1] pixel units.
    queries: (N,) int64, ``forwards + backwards`` (see the module docstring).
    clean_correct: (N,) bool, the model classified the clean image correctly.
    attack, params: the attack's name and every parameter that produced the result.
    labels, pred_adv: (N,) true labels and the model's class at ``x_adv``.
    target: (N,) target classes of a targeted attack, else None.
    All (N,) fields live on the CPU.
    """

    x_adv: Tensor
    success: Tensor
    l2: Tensor
    linf: Tensor
    queries: Tensor
    clean_correct: Tensor
    attack: str
    params: dict[str, Any]
    labels: Tensor
    pred_adv: Tensor
    forwards: Tensor
    backwards: Tensor
    target: Tensor | None = None
    backend: str = "robcurve"
    time_s: float = math.nan

    def __len__(self) -> int:
        return int(self.success.shape[0])

    @property
    def robust_accuracy(self) -> float:
        """Share of all samples classified correctly both clean and at ``x_adv``."""
        ok = self.clean_correct & (self.pred_adv == self.labels)
        return float(ok.double().mean()) if len(self) else math.nan

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.double().mean()) if len(self) else math.nan

    @property
    def success_rate(self) -> float:
        """Share of the clean-correct samples on which the attack succeeded."""
        cc = self.clean_correct
        return float(self.success[cc].double().mean()) if cc.any() else math.nan

    def median_distance(self, norm: str = "L2") -> float:
        """Median distance over the clean-correct samples the attack fooled (NaN if none).

        Samples the attack did not fool are left out here; ``success_rate`` counts them.
        """
        d = self.l2 if canonical_norm(norm) == "L2" else self.linf
        m = self.clean_correct & self.success
        return float(d[m].median()) if m.any() else math.nan

    def summary(self) -> dict[str, Any]:
        return {"attack": self.attack, "backend": self.backend, "n": len(self),
                "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                "success_rate": self.success_rate, "median_l2": self.median_distance("L2"),
                "median_linf": self.median_distance("Linf"),
                "mean_queries": float(self.queries.double().mean()) if len(self) else math.nan,
                "time_s": self.time_s}

    def _columns(self) -> dict[str, Any]:
        cols: dict[str, Any] = {
            "sample": list(range(len(self))),
            "label": self.labels.tolist(),
            "clean_correct": self.clean_correct.tolist(),
            "success": self.success.tolist(),
            "pred_adv": self.pred_adv.tolist(),
            "l2": self.l2.tolist(),
            "linf": self.linf.tolist(),
            "queries": self.queries.tolist(),
            "forwards": self.forwards.tolist(),
            "backwards": self.backwards.tolist(),
        }
        if self.target is not None:
            cols["target"] = self.target.tolist()
        return cols

    def to_dataframe(self):
        """One row per sample (pandas DataFrame); attack and backend as constant columns."""
        import pandas as pd

        df = pd.DataFrame(self._columns())
        df["attack"] = self.attack
        df["backend"] = self.backend
        return df


@dataclass
class PGDDistanceResult(AttackResult):
    """Result of :func:`robcurve.attacks.pgd_distance`.

    budget: (N,) smallest budget (in the attack's norm) at which PGD succeeded, up to the
        bisection tolerance; 0 for samples misclassified from the start; ``inf`` for
        *censored* samples (clean-correct, not fooled at ``hi``), which are flagged in
        ``censored`` and counted in ``n_censored``, never dropped.
    budget_lo: (N,) the largest budget tried at which PGD failed (the bracket's low end).
    censored: (N,) bool.
    x_adv etc. are those of the successful run at ``budget``.
    """

    budget: Tensor | None = None
    budget_lo: Tensor | None = None
    censored: Tensor | None = None

    @property
    def n_censored(self) -> int:
        return int(self.censored.sum()) if self.censored is not None else 0

    def median_budget(self) -> float:
        """Median budget over clean-correct samples, censored ones counted as +inf."""
        if self.budget is None:
            return math.nan
        b = self.budget[self.clean_correct]
        return float(b.median()) if b.numel() else math.nan

    def _columns(self) -> dict[str, Any]:
        cols = super()._columns()
        for name in ("budget", "budget_lo", "censored"):
            v = getattr(self, name)
            cols[name] = v.tolist() if v is not None else [None] * len(self)
        return cols


# -- helpers for attack cores -------------------------------------------------------------
class Counter:
    """Per-sample counts of forward passes and vector-Jacobian products, on one device."""

    def __init__(self, n: int, device: torch.device | str = "cpu"):
        self.forwards = torch.zeros(n, dtype=torch.long, device=device)
        self.backwards = torch.zeros(n, dtype=torch.long, device=device)

    def add(self, other: Counter, idx: Tensor) -> None:
        self.forwards[idx] += other.forwards
        self.backwards[idx] += other.backwards


class ModelFn:
    """The model as the attack cores call it: optional autocast, float32 logits out."""

    def __init__(self, model: nn.Module, autocast: bool | torch.dtype = False):
        self.model = model
        self.autocast = autocast

    def __call__(self, x: Tensor) -> Tensor:
        if not self.autocast:
            return self.model(x)
        dtype = self.autocast if isinstance(self.autocast, torch.dtype) else (
            torch.float16 if x.device.type == "cuda" else torch.bfloat16)
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            out = self.model(x)
        return out.float()


def as_pred(scores: Tensor) -> Tensor:
    """(n,) predicted classes from scores (n, K) (logits or probabilities) or predictions (n,)."""
    return scores if scores.dim() == 1 else scores.argmax(1)


def is_success(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """(n,) bool: misclassified (untargeted) or classified as target (targeted).

    ``logits``: scores (n, K) or predicted classes (n,).
    """
    pred = as_pred(logits)
    return pred == target if target is not None else pred != y


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for s in range(0, n, batch_size):
        yield slice(s, min(n, s + batch_size))


@torch.no_grad()
def batched_logits(f: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([f(x[s]).detach().float() for s in batches(len(x), batch_size)]) if len(x) else x.new_zeros(0, 0)


@contextmanager
def eval_mode(model: nn.Module):
    """Put every submodule in eval mode; restore each one's flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, t in modes:
            m.training = t


@contextmanager
def frozen_parameters(model: nn.Module):
    """Switch ``requires_grad`` off for every parameter of ``model``; restore it afterwards.

    Attacks need gradients with respect to the input only: with frozen parameters the forward
    keeps no tensors for weight gradients and no library computes them.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _model_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


def _as_long(t: Any, n: int, what: str, device: torch.device) -> Tensor:
    t = torch.as_tensor(t)
    if t.dim() != 1 or t.shape[0] != n or t.is_floating_point() or t.dtype == torch.bool:
        raise RobcurveError(f"{what} must be an integer tensor of shape ({n},), got {tuple(t.shape)} {t.dtype}",
                            fix=f"pass one class index per image as a LongTensor of length {n}")
    return t.to(device=device, dtype=torch.long)


# -- the interface ---------------------------------------------------------------------------
class Attack:
    """Base class: parameters in ``__init__``, bookkeeping in ``__call__``, core in ``run``.

    Subclasses set ``name`` and implement :meth:`run` (one batch of samples that are not yet
    adversarial, returning the adversarial batch and, if it has them, the logits there), or
    override :meth:`_attack` when the core needs the whole input (restarts, bisection).
    """

    name: ClassVar[str] = "attack"
    backend: ClassVar[str] = "robcurve"
    targeted_ok: ClassVar[bool] = False
    result_class: ClassVar[type[AttackResult]] = AttackResult
    #: the core needs only the clean predictions (not the logits): ``clean_pred=`` suffices
    clean_pred_ok: ClassVar[bool] = False
    #: the core computes the clean logits itself (``_attack`` gets ``None`` and returns them in
    #: its extras as ``"clean_logits"``), e.g. DeepFool from the forward of its first step
    fuses_clean_forward: ClassVar[bool] = False

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    # the core -------------------------------------------------------------------------------
    def run(self, f: ModelFn, x: Tensor, y: Tensor, target: Tensor | None, clean_logits: Tensor,
            ctr: Counter) -> tuple[Tensor, Tensor | None]:
        """Attack one batch; return (x_adv, logits at x_adv or None). Count into ``ctr``."""
        raise NotImplementedError

    @staticmethod
    def _check_classes(k: int, y: Tensor, target: Tensor | None) -> None:
        """Labels and targets must index the model's ``k`` classes."""
        for t, what in ((y, "labels"), (target, "target")):
            if t is not None and len(t) and (int(t.min()) < 0 or int(t.max()) >= k):
                raise RobcurveError(f"{what} must lie in [0, {k - 1}] for a model with {k} classes",
                                    fix=f"check the {what} against the model's classes")

    def _attack(self, f: ModelFn, x: Tensor, y: Tensor, target: Tensor | None, clean_logits: Tensor,
                batch_size: int, ctr: Counter) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """Default driver: run the core on the samples not adversarial from the start, in batches."""
        x_adv = x.clone()
        logits = clean_logits.clone()
        todo = (~is_success(clean_logits, y, target)).nonzero().flatten()
        for s in batches(len(todo), batch_size):
            idx = todo[s]
            local = Counter(len(idx), x.device)
            xb, lb = self.run(f, x[idx], y[idx], None if target is None else target[idx], clean_logits[idx], local)
            ctr.add(local, idx)
            x_adv[idx] = xb.to(x_adv.dtype)
            if lb is None:
                lb = batched_logits(f, x_adv[idx], batch_size)
                ctr.forwards[idx] += 1
            logits[idx] = lb.float()
        return x_adv, logits, {}

    # the public call ------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 batch_size: int | None = None, device: torch.device | str | None = None,
                 autocast: bool | torch.dtype = False, clean_logits: Tensor | None = None,
                 clean_pred: Tensor | None = None) -> AttackResult:
        """Attack images ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,).

        Args:
            model: any nn.Module mapping [0, 1] images to logits (normalisation inside).
            target: (N,) target classes (targeted attacks only).
            batch_size: samples per batch (None: all at once).
            device: run here, moving the model and the data (None: the images' device,
                which must be the model's).
            autocast: run the model's forward under ``torch.autocast`` (True: bfloat16 on
                CPU, float16 on CUDA; or a dtype).
            clean_logits: (N, K) the model's logits on ``x`` (or probabilities: only each row's
                ranking is used), measured by the caller; the attack then skips its clean
                forward. They must come from this model on these images.
            clean_pred: (N,) the model's predicted classes on ``x``; enough for attacks with
                ``clean_pred_ok`` (PGD, PGD distance); others compute what they need.
        Returns:
            :class:`AttackResult`; ``x_adv`` on the images' device, the rest on the CPU.
        """
        t0 = time.perf_counter()
        if not isinstance(model, nn.Module):
            raise RobcurveError(f"model must be a torch.nn.Module, got {type(model).__name__}",
                                fix="wrap it: robcurve.models.wrapper.as_robmodel(module) or an nn.Module whose forward returns logits")
        if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
            raise RobcurveError("images must be a floating-point tensor of shape (N, C, H, W)",
                                fix="pass a float tensor with values in [0, 1]")
        in_device, in_dtype = x.device, x.dtype
        n = x.shape[0]
        if device is not None:
            dev = torch.device(device)
            model.to(dev)
        else:
            dev = x.device
            mdev = _model_device(model)
            if mdev is not None and mdev != dev:
                raise RobcurveError(f"the model is on {mdev} but the images are on {dev}",
                                    fix=f"pass device='{mdev}' (moves the images) or move model and images to one device")
        mdtype = _model_dtype(model) or in_dtype
        x = x.detach().to(device=dev, dtype=mdtype)
        if n and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
            raise RobcurveError(f"images must be in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]",
                                fix="pass unnormalised pixels in [0, 1]; put the mean/std normalisation inside the model (RobcurveModel)")
        x = x.clamp(0, 1)
        y = _as_long(y, n, "labels", dev)
        if target is not None:
            if not self.targeted_ok:
                raise RobcurveError(f"{self.name} ({self.backend}) is untargeted", fix="drop target=")
            target = _as_long(target, n, "target", dev)
        elif self.params.get("targeted"):
            raise RobcurveError(f"{self.name} with targeted=True needs target classes",
                                fix="pass target=<LongTensor (N,)> of the classes to reach")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise RobcurveError(f"batch_size must be a positive int or None, got {batch_size!r}", fix="e.g. batch_size=128")
        bs = batch_size or max(n, 1)
        f = ModelFn(model, autocast)
        ctr = Counter(n, dev)
        clean: Tensor | None = None
        if clean_logits is not None:
            cl = torch.as_tensor(clean_logits)
            if cl.dim() != 2 or cl.shape[0] != n or not cl.is_floating_point():
                raise RobcurveError(f"clean_logits must be a float tensor of shape ({n}, K), got {tuple(cl.shape)} {cl.dtype}",
                                    fix="pass the model's logits (or probabilities) on these images, one row per image")
            clean = cl.detach().to(device=dev, dtype=torch.float32)
        elif clean_pred is not None and self.clean_pred_ok:
            clean = _as_long(clean_pred, n, "clean_pred", dev)
            if n and int(clean.min()) < 0:
                raise RobcurveError("clean_pred must hold class indices >= 0", fix="pass the model's predicted classes")
        with eval_mode(model), frozen_parameters(model), torch.enable_grad():
            if clean is None and not (self.fuses_clean_forward and n):
                clean = batched_logits(f, x, bs)
                ctr.forwards += 1
            if clean is not None and clean.dim() == 2 and n:
                self._check_classes(clean.shape[1], y, target)
            if n:
                x_adv, logits_adv, extras = self._attack(f, x, y, target, clean, bs, ctr)
            else:
                x_adv, logits_adv, extras = x.clone(), clean, {}
            if clean is None:
                clean = extras.pop("clean_logits")
            if logits_adv is None:
                logits_adv = batched_logits(f, x_adv, bs)
                ctr.forwards += 1
        x_adv = x_adv.detach()
        delta = (x_adv - x).flatten(1).double()
        fwd, bwd = ctr.forwards.cpu(), ctr.backwards.cpu()
        params = dict(self.params)
        params.update(batch_size=batch_size, device=str(dev), autocast=str(autocast) if autocast else False,
                      clean_from_caller=clean_logits is not None or (clean_pred is not None and self.clean_pred_ok))
        params.setdefault("queries_counted", "per sample")
        if self.targeted_ok:
            params["targeted"] = target is not None
        res = self.result_class(
            x_adv=x_adv.to(device=in_device, dtype=in_dtype),
            success=is_success(logits_adv, y, target).cpu() if n else torch.zeros(0, dtype=torch.bool),  # type: ignore[arg-type]
            l2=delta.norm(dim=1).cpu() if n else torch.zeros(0, dtype=torch.float64),
            linf=delta.abs().amax(dim=1).cpu() if n and delta.shape[1] else torch.zeros(n, dtype=torch.float64),
            queries=fwd + bwd, clean_correct=(as_pred(clean) == y).cpu() if n else torch.zeros(0, dtype=torch.bool),  # type: ignore[arg-type]
            attack=self.name, params=params, labels=y.cpu(),
            pred_adv=as_pred(logits_adv).cpu() if n else torch.zeros(0, dtype=torch.long),  # type: ignore[arg-type]
            forwards=fwd, backwards=bwd, target=None if target is None else target.cpu(),
            backend=self.backend, **{k: v.cpu() for k, v in extras.items()},
        )
        res.time_s = time.perf_counter() - t0
        return res


# -- dispatch --------------------------------------------------------------------------------
def _check_params(cls: type, params: dict[str, Any], what: str) -> None:
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in sig.parameters if p != "self"]
    for k in params:
        if k not in accepted:
            close = difflib.get_close_matches(k, accepted, n=2, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RobcurveError(f"{what} has no parameter {k!r}{hint}", fix=f"accepted parameters: {', '.join(accepted)}")
    missing = [p.name for p in sig.parameters.values()
               if p.name != "self" and p.default is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in params]
    if missing:
        raise RobcurveError(f"{what} needs {', '.join(missing)}", fix=f"pass {', '.join(f'{m}=...' for m in missing)}")


def attack_class(name: str, backend: str = "robcurve") -> type[Attack]:
    """The class that runs attack ``name`` on ``backend``."""
    if backend not in BACKENDS:
        close = difflib.get_close_matches(str(backend), BACKENDS, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RobcurveError(f"unknown attack backend {backend!r}{hint}", fix=f"choose one of: {', '.join(BACKENDS)}")
    cls = ATTACKS.get(name)
    if backend == "robcurve":
        return cls
    return BACKEND_ADAPTERS[backend](name)


def run_attack(name: str, model: nn.Module, x: Tensor, y: Tensor, *, backend: str = "robcurve",
               batch_size: int | None = None, device: torch.device | str | None = None,
               **params: Any) -> AttackResult:
    """Run attack ``name`` (``ATTACKS``: 'pgd', 'deepfool', 'pgd-distance') on ``backend``.

    ``params`` are the attack's parameters (see its class), plus the call arguments
    ``target=`` (targeted PGD), ``autocast=``, ``clean_logits=`` and ``clean_pred=`` (see
    :meth:`Attack.__call__`). Unknown names, backends or parameters raise
    :class:`RobcurveError` naming what is accepted.
    """
    cls = attack_class(name, backend)
    call_kw = {k: params.pop(k) for k in ("target", "autocast", "clean_logits", "clean_pred") if k in params}
    _check_params(cls, params, f"attack {name!r} ({backend})")
    return cls(**params)(model, x, y, batch_size=batch_size, device=device, **call_kw)
