"""Statistics with models as the unit (METHOD.md §6): exact permutation tests, power, partial
Spearman, family contrasts, multiplicity corrections and a mixed model over per-sample values.

Why not a bootstrap over models: resampling 6 models gives seed-dependent bounds (the upper
bound of one relation moved from 0.09 to 0.50 across seeds) and resamples with 3 distinct
models; below :data:`MIN_BOOTSTRAP_MODELS` no interval over models is reported at all. The
test is the exact permutation distribution of Spearman's rho (every permutation up to
:data:`MAX_EXACT` models, else :data:`DRAWS` seeded ones), shown with the smallest |rho|
that would be significant at this n (its power line). A relation whose smallest achievable p
(given the ties in the data) exceeds alpha is *untestable at this n*, not "no evidence".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

MAX_EXACT = 9  # all permutations up to 9 models (362,880)
DRAWS = 100_000  # seeded permutations above that
MIN_BOOTSTRAP_MODELS = 15
ALPHA = 0.05


def _rank_rho(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Pearson correlation of rank vectors ``ra`` (n,) with each row of ``rb`` (m, n)."""
    a = ra - ra.mean()
    b = rb - rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((a**2).sum() * (b**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (b @ a) / den, np.nan)


def _perm_rows(n: int, seed: int) -> np.ndarray:
    """Index permutations: all of them for n <= MAX_EXACT, else DRAWS seeded ones (the identity first)."""
    if n <= MAX_EXACT:
        return np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    rng = np.random.default_rng(seed)
    p = np.argsort(rng.random((DRAWS, n)), axis=1)
    p[0] = np.arange(n)
    return p


@dataclass
class SpearmanTest:
    n: int
    rho: float
    p: float  # two-sided permutation p (exact up to MAX_EXACT models)
    p_min: float  # the smallest p any ordering of these values could give (ties raise it)
    rho_critical: float  # the smallest |rho| with p < alpha at this n (no ties)
    method: str

    @property
    def testable(self) -> bool:
        return self.p_min <= ALPHA


def spearman_test(x: Sequence[float], y: Sequence[float], seed: int = 0) -> SpearmanTest:
    """Spearman's rho of x and y with its permutation p, smallest achievable p and critical |rho|."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3:
        return SpearmanTest(n, math.nan, math.nan, 1.0, math.nan, "too few")
    rx, ry = rankdata(x), rankdata(y)
    perms = _perm_rows(n, seed)
    dist = np.abs(_rank_rho(rx, ry[perms]))
    rho = float(_rank_rho(rx, ry[None])[0])
    exact = n <= MAX_EXACT
    m = len(perms)
    if math.isnan(rho):
        return SpearmanTest(n, rho, math.nan, 1.0, critical_rho(n, seed), "undefined (constant values)")
    extreme = np.nanmax(dist)
    if exact:
        p = float((dist >= abs(rho) - 1e-12).mean())
        p_min = float((dist >= extreme - 1e-12).mean())
    else:  # (count + 1) / (draws + 1): never exactly 0
        p = float(((dist >= abs(rho) - 1e-12).sum() + 1) / (m + 1))
        p_min = float(((dist >= extreme - 1e-12).sum() + 1) / (m + 1))
    how = f"exact permutation ({m:,} orderings)" if exact else f"permutation ({m - 1:,} seeded draws)"
    return SpearmanTest(n, rho, p, p_min, critical_rho(n, seed), how)


_CRIT: dict[tuple[int, float], float] = {}


def critical_rho(n: int, seed: int = 0, alpha: float = ALPHA) -> float:
    """The smallest |rho| whose two-sided permutation p is below ``alpha`` for n distinct values."""
    key = (n, alpha)
    if key not in _CRIT:
        if n < 3:
            return math.nan
        r = np.arange(1, n + 1, dtype=float)
        dist = np.sort(np.abs(_rank_rho(r, r[_perm_rows(n, seed)])))
        # the smallest attainable |rho| value c with P(|rho| >= c) < alpha
        vals = np.unique(np.round(dist, 12))
        share = np.array([(dist >= v - 1e-12).mean() for v in vals])
        ok = vals[share < alpha]
        _CRIT[key] = float(ok.min()) if ok.size else math.inf
    return _CRIT[key]


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float], seed: int = 0,
                     with_p: bool = True) -> tuple[float, float]:
    """Partial Spearman of x and y given z (ranks, then partial correlation) and its permutation p.

    The p permutes the residuals of rank(y) on rank(z) (Freedman and Lane), exactly up to
    MAX_EXACT models, else with seeded draws.
    """
    rx, ry, rz = (rankdata(np.asarray(v, float)) for v in (x, y, z))
    n = len(rx)
    if n < 4:
        return math.nan, math.nan

    def resid(a: np.ndarray) -> np.ndarray:
        zc = rz - rz.mean()
        den = (zc**2).sum()
        return a - a.mean() - (zc * ((a - a.mean()) @ zc / den) if den > 0 else 0)

    ex, ey = resid(rx), resid(ry)

    def corr(b: np.ndarray) -> np.ndarray:
        a = ex
        den = np.sqrt((a**2).sum() * (b**2).sum(axis=-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (b @ a) / den, np.nan)

    r = float(corr(ey[None])[0])
    if math.isnan(r) or not with_p:  # with_p=False: the coefficient only (no permutation distribution)
        return r, math.nan
    perms = _perm_rows(n, seed)
    dist = np.abs(corr(ey[perms]))
    cnt = (dist >= abs(r) - 1e-12).sum()
    p = float(cnt / len(perms)) if n <= MAX_EXACT else float((cnt + 1) / (len(perms) + 1))
    return r, p


def family_contrast(values: Sequence[float], groups: Sequence[str], a: str, b: str, seed: int = 0
                    ) -> dict[str, Any]:
    """Difference of medians (a − b) over models, with the exact permutation p over the family labels."""
    v = np.asarray(values, float)
    g = np.asarray(groups)
    keep = (g == a) | (g == b)
    v, g = v[keep], g[keep]
    na, nb = int((g == a).sum()), int((g == b).sum())
    out: dict[str, Any] = {"a": a, "b": b, "n_a": na, "n_b": nb, "diff": math.nan, "p": math.nan, "method": ""}
    if na < 2 or nb < 2:
        out["method"] = "untestable (fewer than 2 models in a family)"
        return out
    obs = float(np.median(v[g == a]) - np.median(v[g == b]))
    n = na + nb
    combos = math.comb(n, na)
    if combos <= 200_000:
        idx = np.array(list(itertools.combinations(range(n), na)))
        how = f"exact permutation over family labels ({combos:,} labellings)"
    else:
        rng = np.random.default_rng(seed)
        idx = np.argsort(rng.random((DRAWS, n)), axis=1)[:, :na]
        how = f"permutation over family labels ({DRAWS:,} seeded draws)"
    mask = np.zeros((len(idx), n), bool)
    mask[np.arange(len(idx))[:, None], idx] = True
    vs = np.broadcast_to(v, mask.shape)
    ma = np.nanmedian(np.where(mask, vs, np.nan), axis=1)
    mb = np.nanmedian(np.where(~mask, vs, np.nan), axis=1)
    dist = np.abs(ma - mb)
    cnt = (dist >= abs(obs) - 1e-12).sum()
    p = float(cnt / len(idx)) if combos <= 200_000 else float((cnt + 1) / (len(idx) + 1))
    out.update(diff=obs, p=p, method=how)
    return out


def adjust(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Multiplicity-adjusted p-values (statsmodels ``multipletests``: 'holm' or 'fdr_bh'); NaN stays NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out.tolist()


def mixed_model(df: Any, y: str, x: str, group: str = "model", fixed: Sequence[str] = ()) -> dict[str, Any]:
    """Per-sample ``y ~ x + fixed`` with a random intercept per ``group`` (statsmodels MixedLM, REML).

    Returns the coefficient of ``x`` with its 95% Wald interval and p, the number of samples and
    groups. Variables are standardised first so the coefficient is in SD of y per SD of x.
    """
    import warnings

    import statsmodels.formula.api as smf

    d = df[[y, x, group, *fixed]].replace([np.inf, -np.inf], np.nan).dropna().copy()
    for c in (y, x, *[f for f in fixed if d[f].dtype.kind in "fi"]):
        sd = d[c].std()
        d[c] = (d[c] - d[c].mean()) / sd if sd > 0 else 0.0
    terms = " + ".join([x, *[f"C({f})" if d[f].dtype.kind not in "fi" else f for f in fixed]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm(f"{y} ~ {terms}", d, groups=d[group]).fit(reml=True)
    lo, hi = fit.conf_int().loc[x].tolist()
    return {"coef": float(fit.params[x]), "lo": float(lo), "hi": float(hi), "p": float(fit.pvalues[x]),
            "n_samples": int(len(d)), "n_models": int(d[group].nunique()), "formula": f"{y} ~ {terms} + (1 | {group})",
            "unit": "SD of y per SD of x (both standardised over samples)"}
