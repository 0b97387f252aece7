"""The measurement registry: what a run can measure per batch of samples.

A :class:`Measurement` is registered once with its run function ``run(ctx, start, x, y,
split_idx) -> list[dict]`` (one JSON-ready dict per sample, written to the store), its
config section (a field of :class:`~robcurve.run.config.RunConfig`, or for a plugin a
pydantic model that becomes a config section of that name), its position in a run, and
whether ``--attack`` may name it. Config validation, the CLI's choices, the runner and
``robcurve metrics`` follow from this registry; the metrics that read a measurement's rows
are registered in :mod:`robcurve.run.metrics`.

Adding a measurement::

    from robcurve.run.measures import Measurement, register_measurement
    register_measurement(Measurement("toy", run=my_fn, description="...", order=95))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robcurve.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import BaseModel

    from robcurve.data.base import SampleSet
    from robcurve.models.wrapper import RobcurveModel
    from robcurve.run.config import RunConfig


@dataclass
class Context:
    """What a measurement sees: the config, the model, the samples, the device and a per-batch cache."""

    cfg: RunConfig
    model: RobcurveModel
    data: SampleSet
    device: torch.device
    cache: dict[str, Any] = field(default_factory=dict)

    def batch_seed(self, start: int) -> int:
        """Seed of every random choice of the batch starting at sample ``start``."""
        return self.cfg.seed * 1_000_003 + start

    def attack_kwargs(self, x: Tensor, clean: bool = True) -> dict[str, Any]:
        """Call arguments every attack of this batch gets: the sub-batch size the memory budget
        allows (only when it is smaller than the batch: sub-batching leaves results unchanged)
        and, with ``clean`` on robcurve's backend, the clean logits the ``clean`` measurement
        already computed (saves PGD's clean forward; same model, same images, same batch)."""
        from robcurve.geometry.trajectory import attack_batch_cap

        kw: dict[str, Any] = {}
        cap = attack_batch_cap(self.model, x) if len(x) else 1
        if cap < len(x):
            kw["batch_size"] = int(cap)
        if clean and self.cfg.attack_backend == "robcurve" and len(x):
            if "clean_logits" not in self.cache:  # a resumed batch whose clean rows are stored: the
                self.cache["clean_logits"] = batched_logits(self.model, x).detach()  # same forward again,
            kw["clean_logits"] = self.cache["clean_logits"]  # so query counts never depend on resuming
        return kw


RunFn = Callable[[Context, int, Tensor, Tensor, Tensor], list[dict]]


@dataclass(frozen=True)
class Measurement:
    """A registered measurement (see the module docstring)."""

    name: str
    run: RunFn = field(repr=False)
    description: str
    order: int = 100
    config: str | None = None  # name of its RunConfig section (built-in) or of the plugin section
    config_model: type[BaseModel] | None = None  # pydantic model of a plugin's section
    attack: bool = False  # may be named by --attack
    #: the measurement's figures: ``plot(summary, out_dir) -> [file names]`` (drawn after the built-in figures)
    plot: Callable[[dict, Any], list[str]] | None = field(default=None, repr=False)
    #: how ``submit`` re-measures it: "sample" (a row depends on its sample only: chosen samples), "direction"
    #: (per sample when the direction rule is deterministic, else the whole batch), "batch" (the whole batch)
    recheck: str = "batch"


MEASUREMENTS: Registry[Measurement] = Registry("measurement")


def register_measurement(m: Measurement, replace: bool = False) -> Measurement:
    """Register ``m``; a duplicate name is an error unless ``replace``."""
    if m.name == "none":
        raise ValueError("'none' is reserved (it means no attack)")
    MEASUREMENTS.add(m.name, m, replace=replace)
    return m


def measurement(name: str, description: str, order: int, config: str | None = None, attack: bool = False,
                recheck: str = "batch"):
    """Decorator form of :func:`register_measurement` for the built-in measurements."""
    def deco(fn: RunFn) -> RunFn:
        register_measurement(Measurement(name, fn, description, order, config, None, attack, recheck=recheck))
        return fn

    return deco


def ordered(names: set[str] | list[str]) -> list[str]:
    """Registered measurement names in run order."""
    ms = [MEASUREMENTS.get(n) for n in names]
    return [m.name for m in sorted(ms, key=lambda m: (m.order, m.name))]


def attack_names() -> list[str]:
    return [n for n in MEASUREMENTS.names_in_order() if MEASUREMENTS.get(n).attack]


# -- helpers shared by the built-in measurements -----------------------------------------------------
def prob_fields(logits: Tensor, y: Tensor) -> list[dict]:
    """Per sample: pred, correct, confidence, NLL, Brier and the probability row."""
    logp = F.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    conf, pred = p.max(1)
    onehot = F.one_hot(y, p.shape[1]).double()
    brier = ((p - onehot) ** 2).sum(1)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    rows = []
    for i in range(len(y)):
        rows.append({"pred": int(pred[i]), "correct": bool(pred[i] == y[i]), "conf": float(conf[i]), "nll": float(nll[i]),
                     "brier": float(brier[i]), "probs": [round(float(v), 7) for v in p[i]]})
    return rows


@torch.no_grad()
def batched_logits(model: RobcurveModel, x: Tensor, bs: int = 512) -> Tensor:
    return torch.cat([model(x[s : s + bs]) for s in range(0, len(x), bs)]).cpu()


def direction(ctx: Context, start: int, x: Tensor, y: Tensor) -> Tensor:
    """The batch's direction of travel (computed once per batch, shared by the measurements)."""
    key = f"dir:{start}"
    if key not in ctx.cache:
        from robcurve.geometry import get_direction

        ctx.cache[key] = get_direction(ctx.model, x, y, kind=ctx.cfg.direction.kind, seed=ctx.batch_seed(start),
                                       **ctx.cfg.direction_options())
    return ctx.cache[key]


def records(df: Any) -> list[dict]:
    drop = {"sample", "label"}
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k not in drop}
            for row in df.to_dict(orient="records")]


def attack_rows(res: Any, y: Tensor) -> list[dict]:
    out = []
    for i in range(len(y)):
        out.append({"success": bool(res.success[i]), "l2": float(res.l2[i]), "linf": float(res.linf[i]),
                    "queries": int(res.queries[i]), "clean_correct": bool(res.clean_correct[i]),
                    "pred_adv": int(res.pred_adv[i])})
    return out


def run_pgd(ctx: Context, start: int, x: Tensor, y: Tensor, eps: float) -> Any:
    """PGD at budget ``eps`` with the run's settings, backend and batch seed (cached per batch)."""
    key = f"pgd:{start}:{eps!r}"
    if key not in ctx.cache:
        from robcurve.attacks import run_attack

        p = ctx.cfg.pgd
        ctx.cache[key] = run_attack("pgd", ctx.model, x, y, backend=ctx.cfg.attack_backend, eps=eps, norm=p.norm,
                                    steps=p.steps, step_size=p.step_size, random_start=p.random_start,
                                    restarts=p.restarts, seed=ctx.batch_seed(start), loss=p.loss,
                                    **ctx.attack_kwargs(x))
    return ctx.cache[key]


# number of run positions whose trajectory projection is stored for the summary's plots
PLOTTED_TRAJECTORIES = 6


def _projection(z: Tensor) -> tuple[list[list[float]], list[float]]:
    """A (T, D) path on its first two principal components, rounded for the store."""
    from robcurve.plots import project_path

    p, var = project_path(z)
    return [[round(float(a), 6), round(float(b), 6)] for a, b in p.tolist()], [round(float(v), 6) for v in var]


# -- the built-in measurements --------------------------------------------------------------------
@measurement("clean", "clean predictions: confidence, NLL, Brier, probabilities", 0, recheck="sample")
def m_clean(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    logits = batched_logits(ctx.model, x)
    ctx.cache["clean_logits"] = logits.detach()
    return prob_fields(logits, y.cpu())


@measurement("trajectory", "representation trajectory along d: curvature with its scale ladder", 10, "trajectory",
             recheck="direction")
def m_trajectory(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.geometry import curvature, trajectory

    t = ctx.cfg.trajectory
    d = direction(ctx, start, x, y)
    traj = trajectory(ctx.model, x, d, T=t.T, E=t.E, clamp=ctx.cfg.direction.clamp, y=y, chunk_size=t.chunk_size)
    cur = curvature(traj, region=t.region, ladder=tuple(t.ladder))
    ctx.cache[f"curvature:{start}"] = cur  # the jump-out's "before" side (same grid and settings): shared
    rows = records(cur.to_dataframe())
    for i, r in enumerate(rows):  # the few trajectories drawn by the summary, projected to their plane
        if start + i < PLOTTED_TRAJECTORIES:
            pts, var = _projection(traj.features[i])
            r["plot"] = {"points": pts, "var": var, "eps": [round(float(e), 8) for e in traj.eps.tolist()],
                         "other": (traj.preds[i] != traj.clean_pred[i]).tolist()}
    return rows


@measurement("travel", "travel distance along d to the first label flip", 20, "travel", recheck="direction")
def m_travel(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.geometry import travel_distance

    t = ctx.cfg.travel
    d = direction(ctx, start, x, y)
    res = travel_distance(ctx.model, x, y, d, h=t.h, tol=t.tol, eps_max=t.eps_max, clamp=ctx.cfg.direction.clamp)
    ctx.cache[f"travel:{start}"] = res  # shared with the boundary-relative window (same inputs, same search)
    return records(res.to_dataframe())


@measurement("pgd", "PGD robust accuracy and calibration on the PGD examples at the budget", 30, "pgd", attack=True)
def m_pgd(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    res = run_pgd(ctx, start, x, y, ctx.cfg.pgd_eps())
    rows = attack_rows(res, y)
    for r, q in zip(rows, prob_fields(batched_logits(ctx.model, res.x_adv), y.cpu()), strict=True):
        r.update({"adv_" + k: v for k, v in q.items()})
    return rows


@measurement("pgd_distance", "smallest successful PGD budget per sample (bisection)", 40, "pgd_distance")
def m_pgd_distance(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.attacks import pgd_distance

    p, pd_ = ctx.cfg.pgd, ctx.cfg.pgd_distance
    res = pgd_distance(ctx.model, x, y, norm=p.norm, hi=pd_.hi, bisection_steps=pd_.bisection_steps, steps=pd_.steps,
                       seed=ctx.batch_seed(start), loss=pd_.loss, **ctx.attack_kwargs(x))
    return [{"budget": float(res.budget[i]), "censored": bool(res.censored[i]), "clean_correct": bool(res.clean_correct[i])}
            for i in range(len(y))]


@measurement("deepfool", "DeepFool minimal adversarial distance", 50, "deepfool", attack=True, recheck="sample")
def m_deepfool(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.attacks import run_attack

    c = ctx.cfg.deepfool
    res = run_attack("deepfool", ctx.model, x, y, backend=ctx.cfg.attack_backend, norm=c.norm, steps=c.steps,
                     overshoot=c.overshoot, candidates=c.candidates,
                     **ctx.attack_kwargs(x, clean=False))  # DeepFool's clean forward is its first step's
    return attack_rows(res, y)


@measurement("jumpout", "jump-out: curvature and travel distance before and after a small jump", 60, "jumpout",
             attack=True)
def m_jumpout(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.geometry import jump_out

    j, t, tr = ctx.cfg.jumpout, ctx.cfg.trajectory, ctx.cfg.travel
    res = jump_out(ctx.model, x, y, eta=j.eta, jump=j.jump, direction=ctx.cfg.direction.kind,
                   keep_direction=j.keep_direction, seed=ctx.batch_seed(start), T=t.T, E=t.E, region=t.region,
                   ladder=tuple(t.ladder), h=tr.h, tol=tr.tol, eps_max=tr.eps_max, chunk_size=t.chunk_size,
                   clamp=ctx.cfg.direction.clamp, direction_options=ctx.cfg.direction_options(),
                   d=direction(ctx, start, x, y), curvature_before=ctx.cache.get(f"curvature:{start}"))
    return records(res.to_dataframe())


@measurement("corruptions", "calibration under each corruption and severity", 70, "calibration", recheck="sample")
def m_corruptions(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.data.corruptions import corrupt

    c = ctx.cfg.calibration
    rows: list[dict] = [{} for _ in range(len(y))]
    for name in c.corruptions:
        for sev in c.severities:
            xc = corrupt(x.cpu(), name, sev, seed=ctx.cfg.seed, sample_seeds=split_idx.cpu()).to(x.device)
            for r, q in zip(rows, prob_fields(batched_logits(ctx.model, xc), y.cpu()), strict=True):
                r[f"{name}:{sev}"] = q
    return rows


@measurement("adv_calibration", "calibration on PGD examples at each budget of pgd.budgets", 80, "pgd")
def m_adv_calibration(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    rows: list[dict] = [{} for _ in range(len(y))]
    for b in ctx.cfg.pgd.budgets:
        res = run_pgd(ctx, start, x, y, b)
        for r, q in zip(rows, prob_fields(batched_logits(ctx.model, res.x_adv), y.cpu()), strict=True):
            r[f"{b:g}"] = q
    return rows


def describe() -> list[tuple[str, str, str, str]]:
    """(name, config section, --attack?, description) of every registered measurement, in run order."""
    out = []
    for n in ordered(MEASUREMENTS.names()):
        m = MEASUREMENTS.get(n)
        out.append((m.name, m.config or "-", "yes" if m.attack else "", m.description))
    return out


# -- measurements in their own modules (one module per measurement) ---------------------------------
#: Each module defines ``MEASUREMENT`` (run function, config section, order) and registers its metrics
#: when imported. The registry holds them as lazy ``"module:object"`` entries (like the attacks) into
#: robcurve.run.builtins, which imports them all in one order on first use: this module never imports
#: them, so there is no import circle (they import this module).
BUILTIN_MODULES = ("layers", "window", "ablation", "jumpout_adaptive")
for _name in BUILTIN_MODULES:
    MEASUREMENTS.add(_name, f"robcurve.run.builtins:{_name}.MEASUREMENT")


def load_all() -> None:
    """Import every lazily registered measurement (each registers its metrics on import)."""
    for n in MEASUREMENTS.names():
        MEASUREMENTS.get(n)
