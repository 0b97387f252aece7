"""The metric registry: every number robcurve reports is registered here, once (by the module of the
measurement it reads: robcurve/run/measurements/).

A :class:`Metric` has a name, the measurement whose per-sample rows it reads, a description,
a unit, a direction (``higher`` / ``lower`` is better, or ``none``), an aggregator (how the
per-sample values become one number, and which interval goes with it) and a selector that
picks the per-sample values for each *condition* (a corruption:severity, an attack budget, a
ladder step, a curvature scale). The summary table, CSV, ``entry.json`` and the leaderboard's
columns and ranking are all derived from this registry; nothing else lists metric names.

Adding a metric::

    from robcurve.run.metrics import METRICS, Metric
    METRICS.add("toy_mean", Metric("toy_mean", "toy", "mean of v", "a.u.", "none", "mean",
                                   lambda inp: {"": (inp.frame("toy")["v"].to_numpy(float),)}))
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from robcurve import stats
from robcurve.naming import grid_step
from robcurve.registry import Registry

Direction = Literal["higher", "lower", "none"]


@dataclass
class Row:
    """One typed summary number: a value with its condition, n, interval (and its method), unit."""

    metric: str
    condition: str
    value: float | None
    lo: float | None
    hi: float | None
    interval: str
    n: int | None
    unit: str
    direction: str
    measurement: str
    description: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON form: non-finite numbers become null with the reason in ``note``."""
        d = asdict(self)
        for k in ("value", "lo", "hi"):
            v = d[k]
            if v is not None and not math.isfinite(v):
                d[k] = None
                why = f"{k} is {'+inf' if v > 0 else ('-inf' if v < 0 else 'nan')}"
                if k == "value" and v == math.inf:
                    why = "value is above the search range (the median falls among censored samples)"
                elif k == "hi" and v == math.inf:
                    why = "upper bound above the search range (censored)"
                d["note"] = "; ".join(x for x in (d["note"], why) if x)
        return d


@dataclass(frozen=True)
class Aggregated:
    value: float
    lo: float | None = None
    hi: float | None = None
    interval: str = "none"
    n: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Aggregator:
    """How per-sample values become one number, and the interval that goes with it."""

    name: str
    fn: Callable[[tuple[np.ndarray, ...], AggContext], Aggregated]
    description: str


@dataclass(frozen=True)
class AggContext:
    bootstrap: int
    seed: int
    n_bins: int
    consistency_draws: int = 1000


AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def _agg(name: str, description: str):
    def deco(fn):
        AGGREGATORS.add(name, Aggregator(name, fn, description))
        return fn

    return deco


@_agg("mean", "mean of finite values; percentile bootstrap interval")
def _mean(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    v = stats.finite(a[0])
    ci = stats.bootstrap_percentile([v], np.mean, c.bootstrap, c.seed) if v.size else None
    return Aggregated(float(v.mean()) if v.size else math.nan, *(ci or (None, None)),
                      stats.PERCENTILE_METHOD if ci else "none", int(v.size))


@_agg("mean_only", "mean of finite values; no interval")
def _mean_only(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    v = stats.finite(a[0])
    return Aggregated(float(v.mean()) if v.size else math.nan, n=int(v.size))


@_agg("median", "median (censored values as +inf, ranked above all); percentile bootstrap interval")
def _median(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    v = np.asarray(a[0], dtype=float)
    v = v[~np.isnan(v)]
    ci = stats.bootstrap_percentile([v], stats.median_censored, c.bootstrap, c.seed) if v.size else None
    return Aggregated(stats.median_censored(v), *(ci or (None, None)), stats.PERCENTILE_METHOD if ci else "none",
                      int(v.size))


@_agg("median_only", "median (censored values as +inf); no interval")
def _median_only(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    v = np.asarray(a[0], dtype=float)
    v = v[~np.isnan(v)]
    return Aggregated(stats.median_censored(v), n=int(v.size))


@_agg("share", "share of true values; Wilson score interval")
def _share(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    v = np.asarray(a[0], dtype=bool)
    if v.size == 0:
        return Aggregated(math.nan, n=0)
    ci = stats.wilson(int(v.sum()), int(v.size))
    return Aggregated(float(v.mean()), *(ci or (None, None)), stats.WILSON_METHOD if ci else "none", int(v.size))


@_agg("count", "number of true values; no interval")
def _count(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    v = np.asarray(a[0], dtype=bool)
    return Aggregated(float(v.sum()), n=int(v.size))


@_agg("spearman", "Spearman rank correlation of two per-sample values; percentile bootstrap interval")
def _spearman(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    x, y = np.asarray(a[0], dtype=float), np.asarray(a[1], dtype=float)
    ok = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[ok], y[ok]
    ci = stats.bootstrap_percentile([x, y], stats.spearman, min(c.bootstrap, 500), c.seed)
    return Aggregated(stats.spearman(x, y), *(ci or (None, None)), stats.PERCENTILE_METHOD if ci else "none", int(x.size))


@_agg("ece", "plug-in binned ECE; no interval (biased upward: compare ece_perfect and rmsce_debiased)")
def _ece(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    conf, corr = np.asarray(a[0], float), np.asarray(a[1], float)
    return Aggregated(stats.ece_plugin(conf, corr, c.n_bins), n=int(conf.size),
                      note="biased upward on finite samples: compare ece_perfect")


@_agg("ece_perfect", "ECE of a perfectly calibrated model with the same confidences (consistency resampling)")
def _ece_perfect(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    conf, corr = np.asarray(a[0], float), np.asarray(a[1], float)
    r = stats.ece_perfect(conf, corr, c.n_bins, c.consistency_draws, c.seed)
    if r is None:
        return Aggregated(math.nan, n=int(conf.size))
    return Aggregated(r[0], r[1], r[2], stats.CONSISTENCY_METHOD, int(conf.size),
                      note=f"share of perfectly calibrated draws with ECE >= observed: p = {r[3]:.3f}")


@_agg("ece_p_perfect", "share of consistency draws with ECE >= the observed ECE (p-value vs perfect calibration)")
def _ece_p(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    conf, corr = np.asarray(a[0], float), np.asarray(a[1], float)
    r = stats.ece_perfect(conf, corr, c.n_bins, c.consistency_draws, c.seed)
    return Aggregated(math.nan if r is None else r[3], n=int(conf.size))


@_agg("rmsce_debiased", "signed root of the debiased squared CE (Kumar et al. 2019); jackknife interval")
def _rmsce(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    conf, corr = np.asarray(a[0], float), np.asarray(a[1], float)
    r = stats.jackknife_ce2(conf, corr, c.n_bins)
    if r is None:
        return Aggregated(math.nan, n=int(conf.size))
    est, lo, hi = r
    return Aggregated(stats.signed_root(est), stats.signed_root(lo), stats.signed_root(hi), stats.JACKKNIFE_METHOD,
                      int(conf.size), note="negative: within noise of perfect calibration")


@_agg("sece", "signed ECE = accuracy - mean confidence; percentile bootstrap interval")
def _sece(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    conf, corr = np.asarray(a[0], float), np.asarray(a[1], float)
    if conf.size == 0:
        return Aggregated(math.nan, n=0)
    diff = corr - conf
    ci = stats.bootstrap_percentile([diff], np.mean, c.bootstrap, c.seed)
    return Aggregated(float(diff.mean()), *(ci or (None, None)), stats.PERCENTILE_METHOD if ci else "none", int(conf.size))


@_agg("mce", "maximum calibration error over non-empty bins; no interval")
def _mce(a: tuple[np.ndarray, ...], c: AggContext) -> Aggregated:
    conf, corr = np.asarray(a[0], float), np.asarray(a[1], float)
    if conf.size == 0:
        return Aggregated(math.nan, n=0)
    idx = stats.bin_of(conf, c.n_bins)
    gaps = [abs(corr[idx == k].mean() - conf[idx == k].mean()) for k in range(c.n_bins) if (idx == k).any()]
    return Aggregated(float(max(gaps)), n=int(conf.size))


# -- inputs ----------------------------------------------------------------------------------
class Inputs:
    """Read-only view of a run's per-sample frames and config for the metric selectors."""

    def __init__(self, frames: Mapping[str, pd.DataFrame], cfg: Any):
        self.frames = frames
        self.cfg = cfg

    def has(self, *measurements: str) -> bool:
        return all(m in self.frames for m in measurements)

    def frame(self, m: str) -> pd.DataFrame:
        return self.frames[m]

    def col(self, m: str, c: str, dtype: Any = float) -> np.ndarray:
        df = self.frames[m]
        if c not in df.columns:
            return np.full(len(df), np.nan if dtype is float else False, dtype=dtype)
        s = df[c]
        if dtype is bool:
            return s.fillna(False).to_numpy(bool)
        return pd.to_numeric(s, errors="coerce").to_numpy(float)

    @staticmethod
    def pattern_cols(df: pd.DataFrame, pattern: str) -> list[tuple[str, str]]:
        """(column, captured value) for columns matching ``pattern`` (one group), in order."""
        rx = re.compile(pattern)
        out = []
        for c in df.columns:
            mt = rx.fullmatch(c)
            if mt:
                out.append((c, mt.group(1)))
        return out

    # clean
    @cached_property
    def conf(self) -> np.ndarray:
        return self.col("clean", "conf")

    @cached_property
    def correct(self) -> np.ndarray:
        return self.col("clean", "correct", bool)

    # trajectory
    def curv_col(self, space: str = "feat") -> tuple[str, str]:
        cols = self.pattern_cols(self.frames["trajectory"], rf"{space}_curvedness_E(.+)")
        return cols[-1]

    @cached_property
    def curv_ok(self) -> np.ndarray:
        """Correct, resolved samples with a finite penultimate curvedness (the curvature sample)."""
        cv = self.col("trajectory", self.curv_col()[0])
        return self.col("trajectory", "correct", bool) & ~self.col("trajectory", "unresolved", bool) & np.isfinite(cv)

    def curvedness(self, space: str = "feat") -> np.ndarray:
        return self.col("trajectory", self.curv_col(space)[0])

    @property
    def scale_condition(self) -> str:
        t = self.cfg.trajectory
        return f"E={self.curv_col()[1]} step={grid_step(t.T, t.E):g} {t.region}"

    # travel (censored as +inf), correct samples only
    @cached_property
    def travel_ok(self) -> np.ndarray:
        return self.col("travel", "correct", bool)

    def travel(self, norm: str = "eps") -> np.ndarray:
        v = self.col("travel", norm)
        return np.where(self.col("travel", "censored", bool), np.inf, v)

    def calib_conditions(self, m: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{condition: (conf, correct)} of a measurement whose columns are ``<condition>.conf``."""
        df = self.frames[m]
        out = {}
        for c, cond in self.pattern_cols(df, r"(.+)\.conf"):
            out[cond] = (self.col(m, c), self.col(m, f"{cond}.correct", bool).astype(float))
        return out


Selector = Callable[[Inputs], Mapping[str, tuple[np.ndarray, ...]]]


@dataclass(frozen=True)
class Metric:
    """One registered metric (see the module docstring)."""

    name: str
    measurement: str
    description: str
    unit: str
    direction: Direction
    aggregate: str
    select: Selector = field(repr=False)
    condition: str = ""  # what the condition column means for this metric
    mean_over_conditions: bool = False  # add a "mean" row (CIFAR-10-C convention)
    leaderboard: bool = False  # a leaderboard column
    requires: tuple[str, ...] = ()  # further measurements needed

    @property
    def interval_method(self) -> str:
        return AGGREGATORS.get(self.aggregate).description

    def rows(self, inp: Inputs, ctx: AggContext) -> list[Row]:
        if not inp.has(self.measurement, *self.requires):
            return []
        agg = AGGREGATORS.get(self.aggregate)
        out = []
        for cond, arrays in self.select(inp).items():
            r = agg.fn(tuple(arrays), ctx)
            out.append(Row(self.name, cond, r.value, r.lo, r.hi, r.interval, r.n, self.unit, self.direction,
                           self.measurement, self.description, r.note))
        if self.mean_over_conditions and len(out) > 1:
            vals = [r.value for r in out if r.value is not None and math.isfinite(r.value)]
            out.append(Row(self.name, "mean", float(np.mean(vals)) if vals else math.nan, None, None, "none",
                           out[0].n, self.unit, self.direction, self.measurement, self.description,
                           f"mean over {len(vals)} conditions"))
        return out


def _builtin_metrics() -> None:
    """Import the built-in measurement modules, which register their metrics (in one fixed order)."""
    importlib.import_module("robcurve.run.builtins")  # deferred: they import this module (and torch)


METRICS: Registry[Metric] = Registry("metric", preload=_builtin_metrics)


def metric(name: str, measurement: str, description: str, unit: str, direction: Direction, aggregate: str,
           select: Selector, **kw: Any) -> Metric:
    """Register a metric (duplicate names are an error)."""
    if name in METRICS:
        raise ValueError(f"metric {name!r} is registered twice")
    if aggregate not in AGGREGATORS:
        raise ValueError(f"metric {name!r}: unknown aggregator {aggregate!r}")
    m = Metric(name, measurement, description, unit, direction, aggregate, select, **kw)
    METRICS.add(name, m)
    return m


def one(*arrays: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
    return {"": arrays}


def calibration_metrics(prefix: str, measurement: str, what: str, cond_label: str, fmt: Callable[[str], str]) -> None:
    """Register ``<prefix>_acc``, ``_ece`` and ``_sece`` of a measurement whose rows hold one probability row per
    condition (columns ``<condition>.conf`` / ``.correct``); ``corruptions`` adds the mean over conditions and
    makes them leaderboard columns."""
    def sel(i: Inputs, acc: bool = False) -> dict[str, tuple[np.ndarray, ...]]:
        out = {}
        for cond, (conf, corr) in i.calib_conditions(measurement).items():
            out[fmt(cond)] = (corr.astype(bool),) if acc else (conf, corr)
        return out

    mean = measurement == "corruptions"
    metric(f"{prefix}_acc", measurement, f"accuracy {what}", "fraction", "higher", "share",
           lambda i: sel(i, True), condition=cond_label, mean_over_conditions=mean, leaderboard=mean)
    metric(f"{prefix}_ece", measurement, f"ECE {what}", "fraction", "lower", "ece",
           sel, condition=cond_label, mean_over_conditions=mean, leaderboard=mean)
    metric(f"{prefix}_sece", measurement, f"signed ECE {what} (positive = underconfident)", "fraction", "none", "sece",
           sel, condition=cond_label, mean_over_conditions=mean, leaderboard=mean)


# -- summary ---------------------------------------------------------------------------------------
def compute_rows(frames: Mapping[str, pd.DataFrame], cfg: Any, names: list[str] | None = None) -> list[Row]:
    """Every registered metric whose measurements are in ``frames``, as typed rows."""
    inp = Inputs(frames, cfg)
    ctx = AggContext(bootstrap=cfg.summary.bootstrap, seed=cfg.seed, n_bins=cfg.calibration.n_bins,
                     consistency_draws=getattr(cfg.summary, "consistency_draws", 1000))
    rows: list[Row] = []
    for name in names or METRICS.names_in_order():
        rows.extend(METRICS.get(name).rows(inp, ctx))
    return rows


def rows_dataframe(rows: list[Row]) -> pd.DataFrame:
    """Tidy DataFrame: metric, condition, value, lo, hi, interval, n, unit, direction, ..."""
    cols = list(Row.__dataclass_fields__)
    return pd.DataFrame([asdict(r) for r in rows], columns=cols)


def describe() -> pd.DataFrame:
    """The registry as a table (name, measurement, unit, direction, aggregation, condition, description)."""
    return pd.DataFrame([{"metric": m.name, "measurement": m.measurement, "unit": m.unit, "direction": m.direction,
                          "aggregation": m.aggregate, "interval": m.interval_method, "condition": m.condition,
                          "leaderboard": m.leaderboard, "description": m.description}
                         for m in (METRICS.get(n) for n in METRICS.names_in_order())])


def load_all() -> None:
    """Register the metrics of every measurement module (each registers them when first imported)."""
    # deferred: torch, needed only here
    from robcurve.run.measures import (
        load_all as load_measurements,  # deferred: torch, for metric tables only
    )

    load_measurements()
