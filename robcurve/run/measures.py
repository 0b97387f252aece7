"""The measurement registry: what a run can measure per batch of samples.

A :class:`Measurement` is registered once with its run function ``run(ctx, start, x, y,
split_idx) -> list[dict]`` (one JSON-ready dict per sample, written to the store), its
config section (a field of :class:`~robcurve.run.config.RunConfig`, or for a plugin a
pydantic model that becomes a config section of that name), its position in a run, and
whether ``--attack`` may name it. Config validation, the CLI's choices, the runner and
``robcurve metrics`` follow from this registry; the metrics that read a measurement's rows
are registered by the measurement's module with :func:`robcurve.run.metrics.metric`.

Adding a measurement::

    from robcurve.run.measures import Measurement, register_measurement
    register_measurement(Measurement("toy", run=my_fn, description="...", order=95))

The built-in ones are written the same way, one module each under ``robcurve/run/measurements/``
(a plugin ships such a module; docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robcurve.attacks import run_attack
from robcurve.geometry import get_direction
from robcurve.memory import attack_batch_cap
from robcurve.registry import Registry
from robcurve.run.sections import register_section

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
    cache: dict[Any, Any] = field(default_factory=dict)

    def batch_seed(self, start: int) -> int:
        """Seed of every random choice of the batch starting at sample ``start``."""
        return self.cfg.seed * 1_000_003 + start

    def attack_kwargs(self, x: Tensor, clean: bool = True) -> dict[str, Any]:
        """Call arguments every attack of this batch gets: the sub-batch size the memory budget
        allows (only when it is smaller than the batch: sub-batching leaves results unchanged)
        and, with ``clean`` on robcurve's backend, the clean logits the ``clean`` measurement
        already computed (saves PGD's clean forward; same model, same images, same batch)."""
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
    if m.config_model is not None and m.config:
        register_section(m.config, m.config_model)
    MEASUREMENTS.add(m.name, m, replace=replace)
    return m


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
        p = ctx.cfg.pgd
        ctx.cache[key] = run_attack("pgd", ctx.model, x, y, backend=ctx.cfg.attack_backend, eps=eps, norm=p.norm,
                                    steps=p.steps, step_size=p.step_size, random_start=p.random_start,
                                    restarts=p.restarts, seed=ctx.batch_seed(start), loss=p.loss,
                                    **ctx.attack_kwargs(x))
    return ctx.cache[key]


def describe() -> list[tuple[str, str, str, str]]:
    """(name, config section, --attack?, description) of every registered measurement, in run order."""
    out = []
    for n in ordered(MEASUREMENTS.names()):
        m = MEASUREMENTS.get(n)
        out.append((m.name, m.config or "-", "yes" if m.attack else "", m.description))
    return out


# -- the built-in measurements: one module each (robcurve/run/measurements/, robcurve/run/layers.py) ---
#: Each module defines ``MEASUREMENT`` (run function, config section, order, figure, re-check rule) and
#: registers its metrics when imported. The registry holds them as lazy ``"module:object"`` entries (like
#: the attacks) into robcurve.run.builtins, which imports them all in one order on first use: this module
#: never imports them, so there is no import circle (they import this module).
BUILTIN_MODULES = ("clean", "trajectory", "travel", "pgd", "pgd_distance", "deepfool", "jumpout", "corruptions",
                   "adv_calibration", "layers", "window", "ablation", "jumpout_adaptive")
for _name in BUILTIN_MODULES:
    MEASUREMENTS.add(_name, f"robcurve.run.builtins:{_name}.MEASUREMENT")


def load_all() -> None:
    """Import every lazily registered measurement (each registers its metrics on import)."""
    for n in MEASUREMENTS.names():
        MEASUREMENTS.get(n)
