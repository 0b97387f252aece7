"""The statistics and verdict rules of the paper-reproduction report.

Every comparison in the report is a difference of two statistics over per-sample values that
share their sample ids (all runs of one report measure the same seeded samples):

    value = stat(A) − stat(B)

where A and B each pool one or more (model, per-sample quantity) arrays, NaN marking samples
that do not enter (e.g. misclassified ones) and +inf marking censored distances (ranked above
every finite value by the median). The 95% interval is a **percentile bootstrap over sample
ids**: the ids are resampled with replacement and both statistics recomputed on the same
resample, so pairing across models (the same image) is kept. With B absent the row is a
one-sample statistic with its bootstrap interval.

Verdict rules (stated in every report):

* ``greater`` (the paper predicts value > 0): interval entirely above 0 → *supported*;
  entirely below 0 → *not supported*; else *inconclusive at this n*.
* ``less``: the mirror image.
* ``change`` (the paper predicts a change but no direction): interval excludes 0 →
  *supported*; else *inconclusive at this n* (never "not supported").
* no interval (fewer than ``MIN_N`` samples on a side, or no resample defined) → *inconclusive*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robcurve import stats as rstats

MIN_N = 3
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive at this n"
DESCRIPTIVE = "descriptive (no claim)"

RULES = {
    "greater": "95% bootstrap interval of the difference entirely > 0: supported; entirely < 0: not supported; "
               "else inconclusive at this n",
    "less": "95% bootstrap interval of the difference entirely < 0: supported; entirely > 0: not supported; "
            "else inconclusive at this n",
    "change": "95% bootstrap interval excludes 0 (either side): supported (a change); else inconclusive at this n",
    "none": "descriptive: no verdict",
}


def _mean(v: np.ndarray) -> float:
    return float(np.mean(v))


#: statistics a row may name (values are the non-NaN entries; +inf = censored)
STATS: dict[str, Callable[[np.ndarray], float]] = {
    "median": rstats.median_censored,
    "mean": _mean,
}


@dataclass(frozen=True)
class Diff:
    """stat(A) − stat(B) (or stat(A) alone) with its 95% percentile-bootstrap interval and sample counts."""

    value: float
    lo: float | None
    hi: float | None
    n_a: int
    n_b: int | None
    stat_a: float
    stat_b: float | None


def _as2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[None, :] if a.ndim == 1 else a


def _stat(a: np.ndarray, f: Callable[[np.ndarray], float]) -> float:
    v = a.ravel()
    v = v[~np.isnan(v)]
    return f(v) if v.size else math.nan


def paired_difference(a: np.ndarray, b: np.ndarray | None = None, stat: str = "median", B: int = 1000,
                      seed: int = 0) -> Diff:
    """stat(A) − stat(B) over per-sample arrays aligned by sample id, with a paired bootstrap interval.

    Args:
        a, b: (n,) or (k, n) arrays (k models pooled), NaN = not in the sample, +inf = censored.
        stat: ``"median"`` (censored-aware) or ``"mean"``.
        B: bootstrap resamples of the n sample ids (0: no interval); seed: their seed.
    """
    f = STATS[stat]
    a2 = _as2d(a)
    b2 = None if b is None else _as2d(b)
    n = a2.shape[1]
    if b2 is not None and b2.shape[1] != n:
        raise ValueError(f"a and b must be aligned by sample id: {n} vs {b2.shape[1]} samples")

    def val(idx: np.ndarray | slice) -> tuple[float, float | None]:
        sa = _stat(a2[:, idx], f)
        sb = None if b2 is None else _stat(b2[:, idx], f)
        return sa, sb

    sa, sb = val(slice(None))
    value = sa if sb is None else (sa - sb if not (math.isinf(sa) and math.isinf(sb) and sa == sb) else math.nan)
    n_a = int((~np.isnan(a2)).sum())
    n_b = None if b2 is None else int((~np.isnan(b2)).sum())
    lo = hi = None
    if B > 0 and n_a >= MIN_N and (n_b is None or n_b >= MIN_N):
        rng = np.random.default_rng(seed)
        out = np.empty(B)
        for i in range(B):
            x, y = val(rng.integers(0, n, n))
            out[i] = x if y is None else (x - y if not (math.isinf(x) and math.isinf(y) and x == y) else math.nan)
        out = out[~np.isnan(out)]
        if out.size:
            lo = float(np.percentile(out, 2.5, method="lower"))
            hi = float(np.percentile(out, 97.5, method="higher"))
    return Diff(float(value), lo, hi, n_a, n_b, float(sa), None if sb is None else float(sb))


def spearman_interval(x: np.ndarray, y: np.ndarray, B: int = 1000, seed: int = 0) -> tuple[float, float | None,
                                                                                               float | None, int]:
    """Spearman(x, y) over samples where both are defined (+inf ranks highest), bootstrap 95% interval, n."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[ok], y[ok]
    rho = rstats.spearman(x, y)
    ci = rstats.bootstrap_percentile([x, y], rstats.spearman, B, seed) if B > 0 else None
    return rho, (ci[0] if ci else None), (ci[1] if ci else None), int(x.size)


def verdict(lo: float | None, hi: float | None, expect: str) -> str:
    """The verdict that the rule ``RULES[expect]`` gives for the interval [lo, hi]."""
    if expect == "none":
        return DESCRIPTIVE
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if expect == "greater":
        return SUPPORTED if lo > 0 else (NOT_SUPPORTED if hi < 0 else INCONCLUSIVE)
    if expect == "less":
        return SUPPORTED if hi < 0 else (NOT_SUPPORTED if lo > 0 else INCONCLUSIVE)
    if expect == "change":
        return SUPPORTED if (lo > 0 or hi < 0) else INCONCLUSIVE
    raise ValueError(f"unknown expectation {expect!r} (greater, less, change, none)")
