"""``robcurve bench``: for each batch of samples, the measurements the config asks for.

Results are written per (batch, measurement) to the run's SQLite store as they are
produced; a batch's measurement that is already stored is skipped, so an interrupted run
continues where it stopped. Every random choice is seeded from the config seed and the
batch's first sample, so a resumed run computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

import robcurve
from robcurve.data.base import SampleSet, load_dataset
from robcurve.models import load_model, resolve_spec
from robcurve.models.wrapper import RobcurveModel
from robcurve.run.config import RunConfig
from robcurve.run.store import Store

CODE_VERSION = robcurve.__version__


def slug(text: str) -> str:
    """A file-name-safe form of a name: it cannot leave the folder it is put in."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s[:80] or "run"


def default_out(cfg: RunConfig) -> Path:
    return Path("runs") / f"{slug(cfg.model)}_{slug(cfg.dataset)}_{cfg.attack}_{cfg.digest()[:8]}"


@dataclass
class Context:
    cfg: RunConfig
    model: RobcurveModel
    data: SampleSet
    device: torch.device
    cache: dict[str, Any] = field(default_factory=dict)

    def batch_seed(self, start: int) -> int:
        return self.cfg.seed * 1_000_003 + start


# -- per-batch measurements ----------------------------------------------------------------
Measure = Callable[[Context, int, Tensor, Tensor, Tensor], list[dict]]
MEASURES: dict[str, Measure] = {}


def measure(name: str):
    def deco(fn: Measure) -> Measure:
        MEASURES[name] = fn
        return fn

    return deco


def _prob_fields(logits: Tensor, y: Tensor) -> list[dict]:
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
def _logits(model: RobcurveModel, x: Tensor, bs: int = 512) -> Tensor:
    return torch.cat([model(x[s : s + bs]) for s in range(0, len(x), bs)]).cpu()


@measure("clean")
def m_clean(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    return _prob_fields(_logits(ctx.model, x), y.cpu())


def _direction(ctx: Context, start: int, x: Tensor, y: Tensor) -> Tensor:
    key = f"dir:{start}"
    if key not in ctx.cache:
        from robcurve.geometry import get_direction

        ctx.cache.clear()
        ctx.cache[key] = get_direction(ctx.model, x, y, kind=ctx.cfg.direction.kind, seed=ctx.batch_seed(start),
                                       **ctx.cfg.direction_options())
    return ctx.cache[key]


def _records(df) -> list[dict]:
    drop = {"sample", "label"}
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k not in drop}
            for row in df.to_dict(orient="records")]


@measure("trajectory")
def m_trajectory(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.geometry import curvature, trajectory

    t = ctx.cfg.trajectory
    d = _direction(ctx, start, x, y)
    traj = trajectory(ctx.model, x, d, T=t.T, E=t.E, clamp=ctx.cfg.direction.clamp, y=y, chunk_size=t.chunk_size)
    cur = curvature(traj, region=t.region, ladder=tuple(t.ladder))
    return _records(cur.to_dataframe())


@measure("travel")
def m_travel(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.geometry import travel_distance

    t = ctx.cfg.travel
    d = _direction(ctx, start, x, y)
    res = travel_distance(ctx.model, x, y, d, h=t.h, tol=t.tol, eps_max=t.eps_max, clamp=ctx.cfg.direction.clamp)
    return _records(res.to_dataframe())


def _attack_rows(res, y: Tensor) -> list[dict]:
    out = []
    for i in range(len(y)):
        out.append({"success": bool(res.success[i]), "l2": float(res.l2[i]), "linf": float(res.linf[i]),
                    "queries": int(res.queries[i]), "clean_correct": bool(res.clean_correct[i]),
                    "pred_adv": int(res.pred_adv[i])})
    return out


def _pgd(ctx: Context, start: int, x: Tensor, y: Tensor, eps: float):
    """PGD at budget ``eps`` with the run's settings, backend and batch seed."""
    from robcurve.attacks import run_attack

    p = ctx.cfg.pgd
    return run_attack("pgd", ctx.model, x, y, backend=ctx.cfg.attack_backend, eps=eps, norm=p.norm, steps=p.steps,
                      step_size=p.step_size, random_start=p.random_start, restarts=p.restarts, seed=ctx.batch_seed(start))


@measure("pgd")
def m_pgd(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    res = _pgd(ctx, start, x, y, ctx.cfg.pgd_eps())
    rows = _attack_rows(res, y)
    for r, q in zip(rows, _prob_fields(_logits(ctx.model, res.x_adv), y.cpu()), strict=True):
        r.update({"adv_" + k: v for k, v in q.items()})
    return rows


@measure("adv_calibration")
def m_adv_calibration(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    """Calibration on PGD examples at each extra budget (pgd.budgets)."""
    rows: list[dict] = [{} for _ in range(len(y))]
    for b in ctx.cfg.pgd.budgets:
        res = _pgd(ctx, start, x, y, b)
        for r, q in zip(rows, _prob_fields(_logits(ctx.model, res.x_adv), y.cpu()), strict=True):
            r[f"{b:g}"] = q
    return rows


@measure("pgd_distance")
def m_pgd_distance(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.attacks import pgd_distance

    p, pd_ = ctx.cfg.pgd, ctx.cfg.pgd_distance
    res = pgd_distance(ctx.model, x, y, norm=p.norm, hi=pd_.hi, bisection_steps=pd_.bisection_steps, steps=pd_.steps,
                       seed=ctx.batch_seed(start))
    # budget is inf where censored; the store writes non-finite numbers as null
    return [{"budget": float(res.budget[i]), "censored": bool(res.censored[i]), "clean_correct": bool(res.clean_correct[i])}
            for i in range(len(y))]


@measure("deepfool")
def m_deepfool(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.attacks import run_attack

    c = ctx.cfg.deepfool
    res = run_attack("deepfool", ctx.model, x, y, backend=ctx.cfg.attack_backend, norm=c.norm, steps=c.steps,
                     overshoot=c.overshoot, candidates=c.candidates)
    return _attack_rows(res, y)


@measure("jumpout")
def m_jumpout(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.geometry import jump_out

    j, t, tr = ctx.cfg.jumpout, ctx.cfg.trajectory, ctx.cfg.travel
    res = jump_out(ctx.model, x, y, eta=j.eta, jump=j.jump, direction=ctx.cfg.direction.kind,
                   keep_direction=j.keep_direction, seed=ctx.batch_seed(start), T=t.T, E=t.E, region=t.region,
                   ladder=tuple(t.ladder), h=tr.h, tol=tr.tol, eps_max=tr.eps_max, chunk_size=t.chunk_size,
                   clamp=ctx.cfg.direction.clamp, direction_options=ctx.cfg.direction_options())
    return _records(res.to_dataframe())


@measure("corruptions")
def m_corruptions(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    from robcurve.data.corruptions import corrupt

    c = ctx.cfg.calibration
    rows: list[dict] = [{} for _ in range(len(y))]
    for name in c.corruptions:
        for sev in c.severities:
            xc = corrupt(x.cpu(), name, sev, seed=ctx.cfg.seed, sample_seeds=split_idx.cpu()).to(x.device)
            for r, q in zip(rows, _prob_fields(_logits(ctx.model, xc), y.cpu()), strict=True):
                r[f"{name}:{sev}"] = q
    return rows


# -- the run ---------------------------------------------------------------------------------
@dataclass
class RunResult:
    out: Path
    store_path: Path
    config: RunConfig
    model_info: dict
    summary: dict
    computed: int
    skipped: int
    elapsed_s: float


def prepare(cfg: RunConfig, verbose: bool = True) -> tuple[RobcurveModel, SampleSet, torch.device]:
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from robcurve.errors import RobcurveError

        raise RobcurveError("--device cuda was asked for but no CUDA device is available", fix="use --device cpu")
    spec = resolve_spec(cfg.model, cfg.dataset)
    if verbose and spec != cfg.model:
        print(f"robcurve: model {cfg.model!r} resolved to {spec!r} for dataset {cfg.dataset!r}", file=sys.stderr)
    model = load_model(spec, dataset=cfg.dataset.split("-c:")[0], threat_model=cfg.threat_model, weights=cfg.weights,
                       model_dir=cfg.model_dir, device=device,
                       dtype=torch.float64 if cfg.dtype == "float64" else None)
    if spec != cfg.model:
        model.info.extra["alias"] = cfg.model
    data = load_dataset(cfg.dataset, split=cfg.split, n=cfg.n, seed=cfg.seed, data_dir=cfg.data_dir)
    return model, data, device


def run(cfg: RunConfig, *, fresh: bool = False, progress: bool | None = None, verbose: bool = True,
        summarize: bool = True) -> RunResult:
    """Run (or resume) the measurements of ``cfg``; return where the results are."""
    from robcurve.run.summary import write_outputs

    t0 = time.time()
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "results.sqlite"
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(str(store_path) + suffix).unlink(missing_ok=True)
    model, data, device = prepare(cfg, verbose)
    store = Store(store_path)
    cfg_dict = cfg.model_dump()
    digest = cfg.digest()
    store.bind(digest, cfg_dict, CODE_VERSION)
    store.set_meta(model=model.info.to_dict(), dataset={"name": data.name, "split": data.split, "source": data.source,
                                                          "n": len(data)})
    (out / "config.json").write_text(json.dumps(cfg_dict, indent=2) + "\n")
    ctx = Context(cfg, model, data, device)
    measurements = cfg.all_measurements()
    if progress is None:
        progress = sys.stderr.isatty()
    bars = {m: tqdm(total=len(data), desc=f"{m:>15}", position=i, leave=True, disable=not progress, unit="img")
            for i, m in enumerate(measurements)}
    computed = skipped = 0
    try:
        for start in range(0, len(data), cfg.batch_size):
            stop = min(len(data), start + cfg.batch_size)
            samples = list(range(start, stop))
            x = data.images[start:stop].to(device, model.dtype)
            y = data.labels[start:stop].to(device)
            split_idx = data.indices[start:stop]
            for m in measurements:
                done = store.done(m, samples)
                if len(done) == len(samples):
                    skipped += len(samples)
                else:
                    values = MEASURES[m](ctx, start, x, y, split_idx)
                    rows = [(s, int(si), int(lab), v) for s, si, lab, v in
                            zip(samples, split_idx.tolist(), y.tolist(), values, strict=True)]
                    store.write(m, rows, digest, CODE_VERSION)
                    computed += len(samples)
                bars[m].update(len(samples))
            ctx.cache.clear()
    finally:
        for b in bars.values():
            b.close()
    summary = write_outputs(store, out, cfg, model, data) if summarize else {}
    store.close()
    return RunResult(out, store_path, cfg, model.info.to_dict(), summary, computed, skipped, time.time() - t0)
