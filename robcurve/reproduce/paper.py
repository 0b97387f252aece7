"""``robcurve reproduce``: the findings of Kim et al. (AAAI 2024) measured on any models, with verdicts.

Work (all resumable: each piece is an ordinary bench run in its own folder under ``out``):

* ``models/<model>/``   the paper config (``configs/paper.yaml`` plus the ``layers`` measurement)
                        on every model: curvature on the scale ladder, travel distance, jump-out
                        (random sign jump, direction recomputed), DeepFool, PGD distance,
                        calibration clean, corrupted and under attack, the layer profile;
* ``jump-keep/<model>/`` the jump-out variant that keeps the original direction;
* ``track/``            the training series (``robcurve track``): clean, trajectory, travel per
                        checkpoint.

The runs are read back with :func:`robcurve.load_run`; :func:`quantities` turns each into
per-sample arrays aligned by sample id, and every row of the report is a *recipe* over those
arrays (which models, which quantity, which samples, which statistic, expected sign) evaluated
by :func:`evaluate` with the statistics and verdict rules of :mod:`robcurve.reproduce.stats`.
The recipes are stored in ``report.json``, so every number can be recomputed from the models
through the public API (the tests do).
"""

from __future__ import annotations

import math
import sys
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robcurve.errors import RobcurveError
from robcurve.naming import dataset_family, grid_step
from robcurve.reproduce import stats as S
from robcurve.run.config import SHIPPED, RunConfig

DEFAULT_MODELS = ("zoo:vit-fmnist", "zoo:swin-fmnist", "zoo:resnet-fmnist", "zoo:convnext-fmnist")
TRACK_MEASUREMENTS = ["clean", "trajectory", "travel"]
MIN_CURV_N = 5  # evolution: the earliest checkpoint with at least this many samples in the curvature sample


@dataclass(frozen=True)
class Mode:
    """A reproduction mode: samples per model, layer-profile samples, default models, epochs, config overrides."""

    name: str
    n: int
    layer_samples: int
    models: tuple[str, ...]
    epochs: str  # "all": every shipped checkpoint; "ends": the first after initialisation and the last
    overrides: dict[str, Any] = field(default_factory=dict)


MODES: dict[str, Mode] = {
    # full: sized so that the four zoo models and both training series fit in 45 minutes on 2 idle CPU cores
    # (estimated; see the README section on reproducing the paper); configs/paper.yaml's own n = 1000 takes hours
    "full": Mode("full", 120, 24, DEFAULT_MODELS, "all", {}),
    # quick: fewer samples, 3 corruption conditions, the attack budget of the PGD attack only (its examples are
    # reused), a coarser PGD-distance bisection, two checkpoints (after epoch 1, final) per series
    "quick": Mode("quick", 24, 4, ("zoo:vit-fmnist", "zoo:resnet-fmnist"), "ends",
                  {"calibration": {"corruptions": ["gaussian_noise", "fog", "contrast"], "severities": [3]},
                   "pgd": {"budgets": [0.1]}, "pgd_distance": {"bisection_steps": 5},
                   "summary": {"bootstrap": 500}}),
}


# -- configs ---------------------------------------------------------------------------------------
def base_config(mode: Mode, config: str | Path | None = None, *, n: int | None = None,
                layer_samples: int | None = None, seed: int | None = None, device: str | None = None,
                set_: list[str] | None = None) -> RunConfig:
    """The model-run config: ``config`` (default configs/paper.yaml) + the mode's overrides + ``layers``."""
    from robcurve.run.config import load_config, merge, parse_set

    path = Path(config) if config else SHIPPED / "paper.yaml"
    from robcurve.run.config import read_yaml

    base_meas = list(read_yaml(path).get("measurements") or [])
    over: dict[str, Any] = merge({}, mode.overrides)
    over["n"] = n or mode.n
    over["batch_size"] = min(100, over["n"])
    if seed is not None:
        over["seed"] = seed
    if device is not None:
        over["device"] = device
    meas = base_meas or ["clean", "trajectory", "travel", "jumpout", "deepfool", "pgd_distance", "corruptions",
                         "adv_calibration"]
    if "layers" not in meas:
        meas = [*meas, "layers"]
    over["measurements"] = meas
    over["layers"] = {"max_samples": layer_samples or mode.layer_samples}
    if set_:
        over = merge(over, parse_set(set_))
    return load_config(path, over)


def _with(cfg: RunConfig, **update: Any) -> RunConfig:
    d = cfg.model_dump()
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return RunConfig.model_validate(d)


def keep_config(cfg: RunConfig, out: Path) -> RunConfig:
    """The jump-out variant run: the same config, jump-out only, travelling along the original direction."""
    d = cfg.model_dump()
    d.pop("options", None)
    d.update(measurements=[], attack="jumpout", out=str(out))
    d["jumpout"] = {**d["jumpout"], "keep_direction": True}
    return RunConfig.model_validate(d)


def track_config(cfg: RunConfig) -> RunConfig:
    """The training-series config: the same samples and scale; clean, trajectory and travel only."""
    d = cfg.model_dump()
    d.pop("options", None)
    d.update(measurements=list(TRACK_MEASUREMENTS), attack="none", out=None)
    return RunConfig.model_validate(d)


# -- per-sample quantities ----------------------------------------------------------------------------
def _num(df: pd.DataFrame, c: str) -> np.ndarray:
    if c not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[c], errors="coerce").to_numpy(float)


def _flag(df: pd.DataFrame, c: str) -> np.ndarray:
    return df[c].fillna(False).to_numpy(bool) if c in df else np.zeros(len(df), bool)


def quantities(frames: Mapping[str, pd.DataFrame], cfg: RunConfig, keep: Mapping[str, pd.DataFrame] | None = None
               ) -> dict[str, np.ndarray]:
    """Per-sample arrays (aligned by sample id) of one model's run: NaN = not in the sample, +inf = censored.

    Keys: correct, conf, sece_clean; curv_feat, curv_logit (headline 1 − R²), curv_feat_E<e> /
    curv_logit_E<e> (nested intervals), angle_feat_h<h> / angle_logit_h<h> (ladder), curved
    (1/0); travel, travel_l2; deepfool_l2; pgd_dist; travel_over_deepfool, travel_over_pgd;
    sece_corr, acc_corr (mean over the corruption conditions); sece_adv_<b>, acc_adv_<b>;
    jump_<v>_{curved, curv_before, curv_after, curv_change, travel_before, travel_after,
    travel_change, ratio, below1} for v in recompute (the run) and keep (``keep``);
    attn_minus_mlp and layer_<kind> (layer profile).
    """
    from robcurve.run import layers as L
    from robcurve.run.metrics import Inputs

    idx = frames["clean"].index
    fr = {k: v.reindex(idx) for k, v in frames.items()}
    nan = np.nan
    q: dict[str, np.ndarray] = {}
    clean = fr["clean"]
    q["correct"] = _flag(clean, "correct").astype(float)
    q["conf"] = _num(clean, "conf")
    q["sece_clean"] = q["correct"] - q["conf"]
    thr = cfg.trajectory.curved_threshold
    if "trajectory" in fr:
        inp = Inputs(fr, cfg)
        tr = fr["trajectory"]
        ok = inp.curv_ok
        head_e = inp.curv_col()[1]
        for space, tag in (("feat", "feat"), ("logit", "logit")):
            q[f"curv_{tag}"] = np.where(ok, _num(tr, f"{space}_curvedness_E{head_e}"), nan)
            for c, e in Inputs.pattern_cols(tr, rf"{space}_r2_E(.+)"):
                q[f"curv_{tag}_E{e}"] = np.where(ok, 1 - _num(tr, c), nan)
            for c, h in Inputs.pattern_cols(tr, rf"{space}_angle_h(.+)"):
                q[f"angle_{tag}_h{h}"] = np.where(ok, _num(tr, c), nan)
        q["curved"] = np.where(ok, (q["curv_feat"] > thr).astype(float), nan)
    if "travel" in fr:
        tv = fr["travel"]
        ok = _flag(tv, "correct")
        cen = _flag(tv, "censored")
        q["travel"] = np.where(ok, np.where(cen, np.inf, _num(tv, "eps")), nan)
        q["travel_l2"] = np.where(ok, np.where(cen, np.inf, _num(tv, "l2")), nan)
    if "deepfool" in fr:
        df = fr["deepfool"]
        q["deepfool_l2"] = np.where(_flag(df, "clean_correct"), np.where(_flag(df, "success"), _num(df, "l2"), np.inf),
                                    nan)
        if "travel_l2" in q:
            with np.errstate(invalid="ignore", divide="ignore"):
                q["travel_over_deepfool"] = np.where(np.isfinite(q["deepfool_l2"]) & (q["deepfool_l2"] > 0),
                                                     q["travel_l2"] / q["deepfool_l2"], nan)
    if "pgd_distance" in fr:
        pdf = fr["pgd_distance"]
        q["pgd_dist"] = np.where(_flag(pdf, "clean_correct"),
                                 np.where(_flag(pdf, "censored"), np.inf, _num(pdf, "budget")), nan)
        if "travel" in q:
            with np.errstate(invalid="ignore", divide="ignore"):
                q["travel_over_pgd"] = np.where(np.isfinite(q["pgd_dist"]) & (q["pgd_dist"] > 0),
                                                q["travel"] / q["pgd_dist"], nan)
    if "corruptions" in fr:
        conds = Inputs(fr, cfg).calib_conditions("corruptions")
        if conds:
            q["sece_corr"] = np.mean([corr - conf for conf, corr in conds.values()], axis=0)
            q["acc_corr"] = np.mean([corr for _, corr in conds.values()], axis=0)
    if "adv_calibration" in fr:
        for b, (conf, corr) in Inputs(fr, cfg).calib_conditions("adv_calibration").items():
            q[f"sece_adv_{b}"] = corr - conf
            q[f"acc_adv_{b}"] = corr
    for v, src in (("recompute", fr), ("keep", None if keep is None else {k: d.reindex(idx) for k, d in keep.items()})):
        if src is None or "jumpout" not in src:
            continue
        jo = src["jumpout"]
        sr = _num(jo, "shortcut_ratio")
        ok = _flag(jo, "correct") & ~_flag(jo, "censored_before") & np.isfinite(sr)
        cb, ca = _num(jo, "curvedness_before"), _num(jo, "curvedness_after")
        tb = np.where(_flag(jo, "censored_before"), np.inf, _num(jo, "eps_before"))
        ta = np.where(_flag(jo, "censored_after"), np.inf, _num(jo, "eps_after"))
        p = f"jump_{v}_"
        q[p + "curved"] = np.where(ok & np.isfinite(cb), (cb > thr).astype(float), nan)
        q[p + "curv_before"] = np.where(ok, cb, nan)
        q[p + "curv_after"] = np.where(ok, ca, nan)
        q[p + "curv_change"] = np.where(ok, ca - cb, nan)
        q[p + "travel_before"] = np.where(ok, tb, nan)
        q[p + "travel_after"] = np.where(ok, ta, nan)
        with np.errstate(invalid="ignore"):
            q[p + "travel_change"] = np.where(ok, ta - tb, nan)
        q[p + "ratio"] = np.where(ok, sr, nan)
        q[p + "below1"] = np.where(ok, (sr < 1).astype(float), nan)
    if "layers" in fr and L.layer_index(fr["layers"]):
        ld = fr["layers"]
        ok = L.valid(ld)
        d = L.attn_minus_mlp(ld)
        if d is not None:
            q["attn_minus_mlp"] = np.where(ok, d, nan)
        for kind, vals in L.kind_means(ld).items():
            q[f"layer_{kind}"] = np.where(ok, vals, nan)
    return q


# -- recipes -----------------------------------------------------------------------------------------
def _select(Q: Mapping[str, Mapping[str, np.ndarray]], sel: Mapping[str, Any]) -> np.ndarray:
    """One selector {model, q, where: [quantity, value] | None}: the model's quantity, NaN outside ``where``."""
    qm = Q[sel["model"]]
    if sel["q"] not in qm:
        raise KeyError(f"{sel['model']} has no quantity {sel['q']!r}")
    v = np.asarray(qm[sel["q"]], dtype=float).copy()
    w = sel.get("where")
    if w:
        v = np.where(np.asarray(qm[w[0]], dtype=float) == float(w[1]), v, np.nan)
    return v


def evaluate(recipe: Mapping[str, Any], Q: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """Evaluate one report recipe over per-sample quantities ``Q[model][quantity]``.

    ``diff``: stat(pool A) − stat(pool B) (B optional) with the paired bootstrap interval;
    ``spearman``: Spearman(x, y) within one model with its bootstrap interval. Returns value,
    lo, hi, n_a, n_b, stat_a, stat_b, censored_a, censored_b.
    """
    if recipe["type"] == "diff":
        a = np.vstack([_select(Q, s) for s in recipe["a"]])
        b = np.vstack([_select(Q, s) for s in recipe["b"]]) if recipe.get("b") else None
        d = S.paired_difference(a, b, recipe["stat"], recipe["B"], recipe["seed"])
        return {"value": d.value, "lo": d.lo, "hi": d.hi, "n_a": d.n_a, "n_b": d.n_b, "stat_a": d.stat_a,
                "stat_b": d.stat_b, "censored_a": int(np.isinf(a).sum()),
                "censored_b": None if b is None else int(np.isinf(b).sum())}
    if recipe["type"] == "spearman":
        x, y = _select(Q, recipe["x"]), _select(Q, recipe["y"])
        rho, lo, hi, n = S.spearman_interval(x, y, recipe["B"], recipe["seed"])
        ok = ~np.isnan(x) & ~np.isnan(y)
        return {"value": rho, "lo": lo, "hi": hi, "n_a": n, "n_b": None, "stat_a": rho, "stat_b": None,
                "censored_a": int((np.isinf(x[ok]) | np.isinf(y[ok])).sum()), "censored_b": None}
    raise ValueError(f"unknown recipe type {recipe['type']!r}")


def _seed(row_id: str, base: int) -> int:
    return (base * 1_000_003 + zlib.crc32(row_id.encode())) % (2**32)


@dataclass
class Ctx:
    """What the row builders need: the runs' quantities, families, config, bootstrap size, seed."""

    Q: dict[str, dict[str, np.ndarray]]
    family: dict[str, str]
    cfg: RunConfig
    B: int
    seed: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def of(self, fam: str) -> list[str]:
        return [m for m, f in self.family.items() if f == fam]

    def has(self, models: list[str], q: str) -> bool:
        return bool(models) and all(q in self.Q.get(m, {}) for m in models)

    def add(self, row_id: str, finding: str, claim: str, comparison: str, quantity: str, scale: str, expect: str,
            recipe: dict[str, Any]) -> None:
        recipe = {**recipe, "B": self.B, "seed": _seed(row_id, self.seed)}
        r = evaluate(recipe, self.Q)
        self.rows.append({"id": row_id, "finding": finding, "claim": claim, "comparison": comparison,
                          "quantity": quantity, "scale": scale, "expect": expect, "rule": S.RULES[expect],
                          **{k: _clean(v) for k, v in r.items()},
                          "verdict": S.verdict(r["lo"], r["hi"], expect), "recipe": recipe})


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _pool(models: list[str], q: str, where: list[Any] | None = None) -> list[dict[str, Any]]:
    return [{"model": m, "q": q, "where": where} for m in models]


def _short(m: str) -> str:
    return m.removeprefix("zoo:")


def curvature_scale(cfg: RunConfig) -> str:
    t = cfg.trajectory
    return f"E={t.E:g} step={grid_step(t.T, t.E):g} {t.region}, {cfg.direction.kind} direction"


def _tc(c: Ctx) -> tuple[list[str], list[str], str]:
    t, k = c.of("transformer"), c.of("cnn")
    return t, k, f"Transformers ({', '.join(map(_short, t))}) − CNNs ({', '.join(map(_short, k))})"


def finding1(c: Ctx) -> None:
    t, k, comp = _tc(c)
    if not (t and k):
        return
    sc = curvature_scale(c.cfg)
    claim = "Transformers respond nonlinearly (curved trajectories); CNNs fairly linearly"
    c.add("f1.curv_feat", "1", claim, comp, "median penultimate curvedness 1 − R² (headline)", sc, "greater",
          {"type": "diff", "stat": "median", "a": _pool(t, "curv_feat"), "b": _pool(k, "curv_feat")})
    c.add("f1.curv_logit", "1", claim, comp, "median logit curvedness 1 − R²", sc, "greater",
          {"type": "diff", "stat": "median", "a": _pool(t, "curv_logit"), "b": _pool(k, "curv_logit")})
    thr = c.cfg.trajectory.curved_threshold
    c.add("f1.curved_share", "1", claim, comp, f"curved share (1 − R² > {thr:g})", sc, "greater",
          {"type": "diff", "stat": "mean", "a": _pool(t, "curved"), "b": _pool(k, "curved")})
    q0 = c.Q[t[0]]
    for space in ("feat", "logit"):
        for key in sorted((x for x in q0 if x.startswith(f"curv_{space}_E")), key=lambda s: float(s.split("_E")[1])):
            e = key.split("_E")[1]
            if float(e) == c.cfg.trajectory.E or not c.has(t + k, key):
                continue
            c.add(f"f1.{key}", "1", claim, comp, f"median {space} curvedness 1 − R² over [−{float(e):.3g}, {float(e):.3g}]",
                  f"E={float(e):.3g} step={grid_step(c.cfg.trajectory.T, c.cfg.trajectory.E):g} "
                  f"{c.cfg.trajectory.region}", "greater",
                  {"type": "diff", "stat": "median", "a": _pool(t, key), "b": _pool(k, key)})
        for key in sorted((x for x in q0 if x.startswith(f"angle_{space}_h")), key=lambda s: float(s.split("_h")[1])):
            if not c.has(t + k, key) or not any(np.isfinite(c.Q[m][key]).any() for m in t + k):
                continue
            h = key.split("_h")[1]
            c.add(f"f1.{key}", "1", claim, comp, f"mean {space} turning angle at step h (deg)", f"h={h}", "greater",
                  {"type": "diff", "stat": "mean", "a": _pool(t, key), "b": _pool(k, key)})


def finding2(c: Ctx, relations: list[dict[str, Any]]) -> None:
    cfg = c.cfg
    sc = curvature_scale(cfg)
    tsc = f"L∞ along the {cfg.direction.kind} direction, step {cfg.travel.h:g}, censored beyond {cfg.travel.eps_max:g}"
    claim = "samples in a curved region are hard to move out of it: longer travel to the boundary"
    claim_near = "the nearest boundary is close but hidden: travel along d overestimates it more for curved samples"
    for m in c.family:
        q = c.Q[m]
        fam = c.family[m]
        if "curved" not in q or "travel" not in q:
            continue
        cur, st = ["curved", 1], ["curved", 0]
        c.add(f"f2.travel_curved.{m}", "2", claim, f"{_short(m)} ({fam}): curved − straight samples",
              "median travel distance ε to the first label flip", f"{tsc}; {sc}", "greater",
              {"type": "diff", "stat": "median", "a": _pool([m], "travel", cur), "b": _pool([m], "travel", st)})
        c.add(f"f2.spearman_travel.{m}", "2", claim, f"{_short(m)} ({fam}): within the model",
              "Spearman(curvedness, travel distance)", f"{tsc}; {sc}", "greater",
              {"type": "spearman", "x": {"model": m, "q": "curv_feat"}, "y": {"model": m, "q": "travel"}})
        if "travel_over_deepfool" in q:
            c.add(f"f2.over_deepfool.{m}", "2", claim_near, f"{_short(m)} ({fam}): curved − straight samples",
                  "median travel L2 / DeepFool L2", f"DeepFool {cfg.deepfool.norm}, {cfg.deepfool.steps} steps; {sc}",
                  "greater", {"type": "diff", "stat": "median", "a": _pool([m], "travel_over_deepfool", cur),
                              "b": _pool([m], "travel_over_deepfool", st)})
            c.add(f"f2.spearman_deepfool.{m}", "2", "context (no claim)", f"{_short(m)} ({fam}): within the model",
                  "Spearman(curvedness, DeepFool L2)", sc, "none",
                  {"type": "spearman", "x": {"model": m, "q": "curv_feat"}, "y": {"model": m, "q": "deepfool_l2"}})
        if "travel_over_pgd" in q:
            c.add(f"f2.over_pgd.{m}", "2", claim_near, f"{_short(m)} ({fam}): curved − straight samples",
                  "median travel ε / PGD distance (smallest successful L∞ budget)",
                  f"PGD-{cfg.pgd_distance.steps}, {cfg.pgd_distance.bisection_steps} bisection steps; {sc}", "greater",
                  {"type": "diff", "stat": "median", "a": _pool([m], "travel_over_pgd", cur),
                   "b": _pool([m], "travel_over_pgd", st)})
            c.add(f"f2.spearman_pgd.{m}", "2", "context (no claim)", f"{_short(m)} ({fam}): within the model",
                  "Spearman(curvedness, PGD distance)", sc, "none",
                  {"type": "spearman", "x": {"model": m, "q": "curv_feat"}, "y": {"model": m, "q": "pgd_dist"}})
    c.rows.extend(r for r in relations if r["finding"] == "2")


def finding3(c: Ctx) -> None:
    j = c.cfg.jumpout
    for v, label in (("recompute", "direction recomputed at x'"), ("keep", "direction kept")):
        sc = f"η={j.eta:.4g} L∞, {j.jump} jump, {label}; {curvature_scale(c.cfg)}"
        for m in c.family:
            q = c.Q[m]
            p = f"jump_{v}_"
            if p + "curved" not in q:
                continue
            fam = c.family[m]
            cur, st = [p + "curved", 1], [p + "curved", 0]
            c.add(f"f3.curv_change.{v}.{m}", "3", "after a small jump out of a curved region the path straightens",
                  f"{_short(m)} ({fam}): curved samples", "median curvedness after − before the jump", sc, "less",
                  {"type": "diff", "stat": "median", "a": _pool([m], p + "curv_change", cur)})
            c.add(f"f3.travel_change.{v}.{m}", "3", "after the jump the output goes to the boundary directly: "
                  "shorter travel", f"{_short(m)} ({fam}): curved samples", "median travel ε after − before the jump",
                  sc, "less", {"type": "diff", "stat": "median", "a": _pool([m], p + "travel_change", cur)})
            c.add(f"f3.shortcut.{v}.{m}", "3", "a near boundary exists: shortcut ratio < 1 far more often for curved "
                  "samples", f"{_short(m)} ({fam}): curved − straight samples",
                  "share with shortcut ratio (η + distance after) / distance before < 1", sc, "greater",
                  {"type": "diff", "stat": "mean", "a": _pool([m], p + "below1", cur), "b": _pool([m], p + "below1", st)})


def calibration_rows(c: Ctx) -> None:
    t, k, comp = _tc(c)
    bins = f"{c.cfg.calibration.n_bins} equal-width bins; sECE = accuracy − confidence"
    if t and k:
        c.add("cal.sece_clean", "calibration", "Transformers are not overconfident: higher sECE than CNNs", comp,
              "sECE, clean (mean of correct − confidence)", bins, "greater",
              {"type": "diff", "stat": "mean", "a": _pool(t, "sece_clean"), "b": _pool(k, "sece_clean")})
        if c.has(t + k, "sece_corr"):
            conds = ", ".join(f"{x}:{s}" for x in c.cfg.calibration.corruptions for s in c.cfg.calibration.severities)
            c.add("cal.sece_corr", "calibration", "under corruption Transformers stay less overconfident", comp,
                  "sECE under corruption (mean over conditions)", f"{bins}; {conds}", "greater",
                  {"type": "diff", "stat": "mean", "a": _pool(t, "sece_corr"), "b": _pool(k, "sece_corr")})
            c.add("cal.acc_corr", "calibration", "Transformers are more robust to corruptions", comp,
                  "accuracy under corruption (mean over conditions)", conds, "greater",
                  {"type": "diff", "stat": "mean", "a": _pool(t, "acc_corr"), "b": _pool(k, "acc_corr")})
        for key in sorted(x for x in c.Q[t[0]] if x.startswith("sece_adv_")):
            if not c.has(t + k, key):
                continue
            b = key.removeprefix("sece_adv_")
            c.add(f"cal.{key}", "calibration", "(extension) under attack Transformers stay less overconfident", comp,
                  f"sECE on PGD examples at L∞ {b}", f"{bins}; PGD-{c.cfg.pgd.steps} {c.cfg.pgd.norm} eps={b}", "greater",
                  {"type": "diff", "stat": "mean", "a": _pool(t, key), "b": _pool(k, key)})
    for m in c.family:
        if "curv_feat" in c.Q[m]:
            c.add(f"cal.spearman_conf.{m}", "calibration", "curved samples get underconfident predictions",
                  f"{_short(m)} ({c.family[m]}): within the model", "Spearman(curvedness, confidence)",
                  curvature_scale(c.cfg), "less",
                  {"type": "spearman", "x": {"model": m, "q": "curv_feat"}, "y": {"model": m, "q": "conf"}})


def attention_rows(c: Ctx) -> None:
    from robcurve.run.layers import scale_condition

    for m in c.family:
        if "attn_minus_mlp" in c.Q[m]:
            c.add(f"attn.branch.{m}", "attention", "the attention operation induces the nonlinear response",
                  f"{_short(m)} ({c.family[m]}): attention − MLP branch", "mean over samples of the per-block mean "
                  "curvedness difference (attention branch − MLP branch output)", scale_condition(c.cfg), "greater",
                  {"type": "diff", "stat": "mean", "a": _pool([m], "attn_minus_mlp")})


def evolution_rows(c: Ctx, series: dict[str, list[tuple[int, str]]], families: Mapping[str, str]) -> None:
    """series: name -> [(epoch, key in Q)] in epoch order; families: series name -> family."""
    for s, cks in series.items():
        usable = [(e, key) for e, key in cks if np.isfinite(c.Q[key].get("curv_feat", np.array([]))).sum() >= MIN_CURV_N]
        if len(usable) < 2:
            continue
        (e0, k0), (e1, k1) = usable[0], usable[-1]
        fam = families.get(s, "")
        c.add(f"evo.{s}", "evolution", "curvedness evolves during training (the abstract gives no direction)",
              f"{s} ({fam}): epoch {e1} − epoch {e0}", "median penultimate curvedness 1 − R² (same samples)",
              curvature_scale(c.cfg), "change",
              {"type": "diff", "stat": "median", "a": [{"model": k1, "q": "curv_feat"}],
               "b": [{"model": k0, "q": "curv_feat"}]})


def relation_rows(results: Mapping[str, Any], root: str | Path | None, dataset: str) -> tuple[list[dict[str, Any]], str]:
    """Across-model Spearman relations: the leaderboard's when it has entries, else over the report's models."""
    import robcurve.leaderboard as lb

    df = pd.DataFrame()
    source = "runs"
    if root is not None and Path(root).is_dir():
        try:
            df = lb.load(dataset=dataset, threat="Linf", root=root)
        except (RobcurveError, ValueError, OSError) as e:  # an unreadable leaderboard: relate the report's models
            print(f"robcurve reproduce: leaderboard {root} not used ({type(e).__name__})", file=sys.stderr)
            df = pd.DataFrame()
        if len(df):
            source = f"leaderboard ({root})"
    if not len(df):
        df = models_frame(results)
    expect = {"travel_median": "greater", "deepfool_l2_median": "none", "pgd_distance_median": "none",
              "pgd_robust_acc": "none", "sece": "greater", "ece": "none"}
    out = []
    for rel in lb.relations(df):
        e = expect.get(rel.y, "none")
        v = S.verdict(rel.lo, rel.hi, e)
        if e != "none" and rel.n < lb.render.MIN_MODELS:
            v = S.INCONCLUSIVE
        out.append({"id": f"f2.across.{rel.y}", "finding": "2" if rel.y != "sece" else "calibration",
                    "claim": "across models, more curved models are more robust" if rel.y != "sece" else
                    "across models, more curved models are less overconfident",
                    "comparison": f"across {rel.n} models ({source})", "quantity": f"Spearman(curvedness_median, {rel.y})",
                    "scale": "each model's headline scale", "expect": e,
                    "rule": S.RULES[e] + f"; fewer than {lb.render.MIN_MODELS} models: inconclusive",
                    "value": _clean(rel.rho), "lo": _clean(rel.lo), "hi": _clean(rel.hi), "n_a": rel.n, "n_b": None,
                    "stat_a": _clean(rel.rho), "stat_b": None, "censored_a": None, "censored_b": None, "verdict": v,
                    "recipe": {"type": "relation", "source": source, "y": rel.y, "p": _clean(rel.p)}})
    return out, source


def models_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per model of the report (the leaderboard's columns) for :func:`robcurve.leaderboard.relations`."""
    from robcurve.leaderboard.render import RELATED

    recs = []
    for m, r in results.items():
        rec = {"id": m, "series": "", "family": (r.entry.get("robcurve", {}).get("model") or {}).get("family", "other"),
               "curvedness_median": r.value("curvedness_median")}
        for y in RELATED:
            rec[y] = r.value(y)
        recs.append(rec)
    return pd.DataFrame(recs)


# -- orchestration -----------------------------------------------------------------------------------
def _series_specs(models: list[str], mode: Mode, series: list[str] | None) -> list[str]:
    from robcurve.zoo import card, zoo_names

    if series is not None:
        return [s for s in series if s.lower() != "none"]
    out = []
    for m in models:
        name = m.removeprefix("zoo:").split("@")[0]
        if not m.startswith("zoo:") or "@" in m or name not in zoo_names():
            continue
        eps = [int(s["epoch"]) for s in card(name).get("series", [])]
        if not eps:
            continue
        ends = [e for e in eps if e > 0][:1] + eps[-1:]
        out.append(f"zoo:{name}" if mode.epochs == "all" else f"zoo:{name}@{','.join(map(str, dict.fromkeys(ends)))}")
    return out


def reproduce(models: list[str] | None = None, *, quick: bool = False, config: str | Path | None = None,
              out: str | Path | None = None, report_dir: str | Path | None = None, series: list[str] | None = None,
              n: int | None = None, layer_samples: int | None = None, seed: int | None = None,
              device: str | None = None, set_: list[str] | None = None, fresh: bool = False,
              progress: bool | None = None, verbose: bool = True, leaderboard: str | Path | None = "leaderboards",
              summarize: bool | None = None) -> dict[str, Any]:
    """Run (or resume) every measurement of the report, then write it; return its parts.

    ``summarize`` writes each run folder's own summary and plots (default: in the full mode only).
    Returns a dict with ``rows`` (the verdict table as dicts), ``report_dir``, ``markdown_table``,
    ``elapsed_s`` and ``timings`` (seconds per model and per piece of work).
    """
    from robcurve.reproduce.report import write_report
    from robcurve.reproduce.track import parse_series, track
    from robcurve.run.results import load_run
    from robcurve.run.runner import run, slug

    t0 = time.time()
    mode = MODES["quick" if quick else "full"]
    models = list(models or mode.models)
    if len(set(models)) != len(models):
        raise RobcurveError("a model is named twice", fix="name each model once")
    cfg = base_config(mode, config, n=n, layer_samples=layer_samples, seed=seed, device=device, set_=set_)
    out = Path(out) if out else Path("runs") / ("reproduce-quick" if quick else "reproduce")
    rdir = Path(report_dir) if report_dir else out / "report"
    timings: dict[str, dict[str, float]] = {}
    summ = (not quick) if summarize is None else summarize

    def say(msg: str) -> None:
        if verbose:
            print(f"robcurve reproduce: {msg}", file=sys.stderr)

    results, keeps = {}, {}
    for i, m in enumerate(models):
        mdir, kdir = out / "models" / slug(m), out / "jump-keep" / slug(m)
        say(f"[{i + 1}/{len(models)}] {m}: paper config, n={cfg.n} -> {mdir}")
        t1 = time.time()
        run(_with(cfg, model=m, out=str(mdir)), fresh=fresh, progress=progress, verbose=verbose, summarize=summ)
        t2 = time.time()
        say(f"[{i + 1}/{len(models)}] {m}: jump-out, direction kept -> {kdir}")
        kc = keep_config(_with(cfg, model=m), kdir)
        run(kc, fresh=fresh, progress=progress, verbose=verbose, summarize=summ)
        timings[m] = {"main_s": round(t2 - t1, 1), "jump_keep_s": round(time.time() - t2, 1)}
        results[m], keeps[m] = load_run(mdir), load_run(kdir)
    specs = _series_specs(models, mode, series)
    tres = None
    if specs:
        say(f"training series {', '.join(specs)} -> {out / 'track'}")
        t1 = time.time()
        tres = track(parse_series(specs), track_config(cfg), out / "track", fresh=fresh, progress=progress,
                     verbose=verbose, summarize=summ)
        timings["track"] = {"total_s": round(time.time() - t1, 1)}
    rows, Q, family, series_map = analyse(results, keeps, tres, cfg, leaderboard)
    stored: dict[str, float] = {}  # compute seconds kept in the stores (summed over resumed sessions)
    for m in models:
        stored[f"{_short(m)} main run"] = _compute_s(results[m])
        stored[f"{_short(m)} jump-out, direction kept"] = _compute_s(keeps[m])
    if tres is not None:
        stored["training series"] = round(sum(_compute_s(load_run(d)) for _, d in tres.runs), 1)
    elapsed = time.time() - t0
    meta = {"mode": mode.name, "n": cfg.n, "layer_samples": cfg.section("layers").max_samples, "models": models,
            "series": specs, "config_digest": cfg.digest(), "seed": cfg.seed, "bootstrap": cfg.summary.bootstrap,
            "timings": timings, "elapsed_s": round(elapsed, 1), "dataset": cfg.dataset, "compute_s": stored,
            "command": command_line(quick, models, mode, config, report_dir, series, n, layer_samples, seed, set_)}
    md_table = write_report(rdir, rows, results, keeps, tres if tres is not None else None, cfg, meta, family)
    return {"rows": rows, "report_dir": rdir, "markdown_table": md_table, "elapsed_s": elapsed, "timings": timings,
            "quantities": Q, "family": family, "series": series_map, "config": cfg}


def _compute_s(r: Any) -> float:
    return round(float(sum((r.entry.get("robcurve", {}).get("compute_s") or {}).values())), 1)


def command_line(quick: bool, models: list[str], mode: Mode, config: Any, report_dir: Any, series: Any, n: Any,
                 layer_samples: Any, seed: Any, set_: Any) -> str:
    """The ``robcurve reproduce`` command that regenerates a report with these settings."""
    parts = ["robcurve", "reproduce"] + (["--quick"] if quick else [])
    if list(models) != list(mode.models):
        parts += ["--models", ",".join(models)]
    for flag, v in (("--config", config), ("--report", report_dir), ("--n", n), ("--layer-samples", layer_samples),
                    ("--seed", seed)):
        if v is not None:
            parts += [flag, str(v)]
    for s in series or []:
        parts += ["--series", s]
    for s in set_ or []:
        parts += ["--set", s]
    return " ".join(parts)


def analyse(results: Mapping[str, Any], keeps: Mapping[str, Any], tres: Any, cfg: RunConfig,
            leaderboard: str | Path | None = "leaderboards") -> tuple[list[dict[str, Any]], dict, dict, dict]:
    """The verdict rows from loaded runs (:class:`robcurve.run.results.RunResults`) and a track result."""
    Q: dict[str, dict[str, np.ndarray]] = {}
    family: dict[str, str] = {}
    for m, r in results.items():
        k = keeps.get(m)
        Q[m] = quantities(r.frames, r.config, None if k is None else k.frames)
        family[m] = (r.entry.get("robcurve", {}).get("model") or {}).get("family", "other")
    c = Ctx(Q, dict(family), cfg, cfg.summary.bootstrap, cfg.seed)
    finding1(c)
    rels, _ = relation_rows(results, leaderboard, dataset_family(cfg.dataset))
    finding2(c, rels)
    finding3(c)
    calibration_rows(c)
    c.rows.extend(r for r in rels if r["finding"] != "2")
    attention_rows(c)
    series_map: dict[str, list[tuple[int, str]]] = {}
    if tres is not None:
        from robcurve.run.results import load_run

        for ck, run_dir in tres.runs:
            key = ck.model if ck.weights is None else f"{ck.model}|{ck.weights}"
            r = load_run(run_dir)
            Q[key] = quantities(r.frames, r.config)
            series_map.setdefault(ck.series, []).append((ck.epoch, key))
        for s in series_map:
            series_map[s].sort()
        evolution_rows(c, series_map, tres.families)
    return c.rows, Q, family, series_map
