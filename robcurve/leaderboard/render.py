"""Leaderboard tables (terminal, Markdown, CSV, LaTeX, HTML) and cross-model relations.

Columns, units, directions and descriptions come from the metric registry (metrics with
``leaderboard=True``); nothing here lists metric names except the relations asked about
(curvedness against the attack distances and calibration, the paper's question).
Ranking follows RobustBench: robust accuracy (AutoAttack where evaluated, else robcurve's
PGD, marked), then clean accuracy.
"""

from __future__ import annotations

import html
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robcurve import stats
from robcurve.errors import RobcurveError
from robcurve.leaderboard.io import SAMPLES_SUFFIX, read_samples
from robcurve.leaderboard.schema import Entry
from robcurve.run.metrics import METRICS, load_all
from robcurve.run.store import atomic_write_bytes, atomic_write_text, json_safe, png_bytes

CURVATURE = "headline_curvedness"  # bw_curvedness_median (boundary-relative) where measured, else curvedness_median
HEADLINE_SOURCES = ("bw_curvedness_median", "curvedness_median")
RELATED = ("travel_median", "deepfool_l2_median", "pgd_distance_median", "pgd_robust_acc", "sece", "ece")
MATCH_TOL = 1.0  # percentage points of clean accuracy for an accuracy-matched pair
MIN_MODELS = 5  # fewer models than this: a correlation across models is not interpreted
BOOT = 2000


def columns() -> list[tuple[str, str | None]]:
    """(metric, condition) of every leaderboard column, from the registry; ``None`` = its only condition."""
    load_all()
    out = []
    for n in METRICS.names_in_order():
        m = METRICS.get(n)
        if m.leaderboard and n != "clean_acc":
            out.append((n, "mean" if m.mean_over_conditions else None))
    return out


def _meta(metric: str) -> Any:
    load_all()
    return METRICS.get(metric)


def entry_value(e: Entry, metric: str, condition: str | None = None) -> tuple[float | None, Any]:
    if e.robcurve is None:
        return None, None
    r = e.robcurve.row(metric, condition)
    return (None if r is None else r.value), r


def tidy(entries: list[Entry]) -> pd.DataFrame:
    """One row per entry (ranked): identity, accuracies, and value/lo/hi/n of every leaderboard metric."""
    recs = []
    for e in entries:
        rob, src = e.robust_acc()
        status = e.status()
        spec = str(e.robcurve.model.get("spec", "")) if e.robcurve else ""
        rec: dict[str, Any] = {
            "id": e.id, "name": e.name, "family": e.family, "dataset": e.dataset, "threat_model": e.threat_model,
            "eps": e.eps, "architecture": e.architecture, "series": _series_label(e), "imported": e.imported,
            "clean_acc": e.clean_acc, "robust_acc": rob, "robust_source": src,
            # the same as fractions, like every robcurve metric (clean_acc / robust_acc are RobustBench's %)
            "clean": None if e.clean_acc is None else e.clean_acc / 100, "robust": None if rob is None else rob / 100,
            "n": e.robcurve.n if e.robcurve else None,
            "status": status, "verified": status == "verified",
            "flags": ",".join(e.robcurve.flags) if e.robcurve else "",
            "population": spec.startswith("zoo:pop-"),
            "test_acc_full": _full_acc(e),
            "compute_s": round(sum(e.robcurve.compute_s.values()), 1) if e.robcurve else None,
        }
        for m, cond in columns():
            v, r = entry_value(e, m, cond)
            rec[m] = v
            rec[f"{m}_lo"] = None if r is None else r.lo
            rec[f"{m}_hi"] = None if r is None else r.hi
            rec[f"{m}_n"] = None if r is None else r.n
            rec[f"{m}_condition"] = None if r is None else r.condition
        recs.append(rec)
    df = pd.DataFrame(recs)
    if df.empty:
        return df
    # one headline definition per board: the boundary-relative one where any entry of the board has it
    # (an entry without it then has no headline value), else the fixed-E curvedness; never a mix
    for suffix in ("", "_lo", "_hi", "_n", "_condition"):
        df[CURVATURE + suffix] = None
    df["headline_metric"] = ""
    for _, idx in df.groupby(["dataset", "threat_model"]).groups.items():
        src = next((m for m in HEADLINE_SOURCES if m in df and df.loc[idx, m].notna().any()), None)
        if src is None:
            continue
        for suffix in ("", "_lo", "_hi", "_n", "_condition"):
            df.loc[idx, CURVATURE + suffix] = df.loc[idx, f"{src}{suffix}"]
        df.loc[idx, "headline_metric"] = src
    for suffix in ("", "_lo", "_hi"):
        df[CURVATURE + suffix] = pd.to_numeric(df[CURVATURE + suffix], errors="coerce")
    typed = {}
    for m, _ in columns():  # the condition also as typed columns: h, eps, corruption, severity (where it names them)
        if f"{m}_condition" in df:
            parsed = df[f"{m}_condition"].map(parse_condition)
            for key in ("h", "E", "eps", "corruption", "severity"):
                vals = parsed.map(lambda d, k=key: d.get(k))
                if vals.notna().any():
                    typed[f"{m}_{key}"] = vals
    if typed:
        df = pd.concat([df, pd.DataFrame(typed, index=df.index)], axis=1)
    for m, _ in columns():  # numbers as float columns (NaN where absent), never None-filled object columns
        for suffix in ("", "_lo", "_hi", "_n"):
            if m + suffix in df:
                df[m + suffix] = pd.to_numeric(df[m + suffix], errors="coerce")
    df = df.copy()  # one block after the column edits above
    df["_unverified"] = df["status"] == "unverified"  # listed, visibly, after every verified or imported entry
    df = df.sort_values(["dataset", "threat_model", "_unverified", "robust_acc", "clean_acc", "id"],
                        ascending=[True, True, True, False, False, True], na_position="last", kind="mergesort")
    df = df.drop(columns="_unverified")
    df.insert(0, "rank", df.groupby(["dataset", "threat_model"]).cumcount() + 1)
    return df.reset_index(drop=True)


_COND_NUM = re.compile(r"\b(h|step|E|eps)=([0-9.eE+-]+)")
_COND_CORR = re.compile(r"^([a-z_]+):(\d+)$")


def parse_condition(cond: Any) -> dict[str, Any]:
    """Typed fields of a condition string: ``h=0.01`` / ``step=0.001`` -> h, ``E=0.1`` -> E (a grid's half-width),
    ``Linf eps=0.1 ...`` -> eps, ``fog:3`` -> corruption, severity."""
    out: dict[str, Any] = {}
    if not isinstance(cond, str):
        return out
    for k, v in _COND_NUM.findall(cond):
        try:
            out[{"step": "h"}.get(k, k)] = float(v)
        except ValueError:
            pass
    m = _COND_CORR.match(cond.strip())
    if m:
        out["corruption"], out["severity"] = m.group(1), int(m.group(2))
    return out


def _full_acc(e: Entry) -> float | None:
    """Clean accuracy (fraction) on the full test split: the zoo card's (series checkpoints: their own)."""
    if e.robcurve is None:
        return None
    extra = e.robcurve.model.get("extra") or {}
    if extra.get("epoch") is not None:  # a series checkpoint: its own accuracy, from the zoo card's series
        # deferred: safetensors, torch, needed only here
        from robcurve.zoo import card

        try:
            c = card(str(e.robcurve.model.get("name", "")))
        except RobcurveError:
            return None
        return next((float(s["test_acc"]) for s in c.get("series", []) if s["epoch"] == extra["epoch"]), None)
    v = extra.get("test_acc")
    return float(v) if isinstance(v, int | float) else None


def _series_label(e: Entry) -> str:
    s = e.robcurve.series if e.robcurve else None
    return f"{s['of']} epoch {s['epoch']}" if s else ""


# -- relations -------------------------------------------------------------------------------------
@dataclass
class Relation:
    """Spearman(x, y) across models: the exact permutation test, its power line and the partial rho.

    ``lo``/``hi`` (a bootstrap interval over models) are given only from MIN_BOOTSTRAP_MODELS
    models up; below that the power line (``rho_critical``) takes their place.
    """

    x: str
    y: str
    n: int
    rho: float
    lo: float | None
    hi: float | None
    p: float | None
    verdict: str
    p_min: float | None = None
    rho_critical: float | None = None
    p_adj: float | None = None  # Holm over the relations of this table
    partial_rho: float | None = None  # given clean accuracy on the full test split
    partial_p: float | None = None
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


def full_test_accuracy(df: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Clean accuracy on the full test split per row (zoo cards), else the entry's own; and which it is."""
    full = pd.to_numeric(df.get("test_acc_full", pd.Series([np.nan] * len(df), index=df.index)), errors="coerce")
    if full.notna().all():
        return full.to_numpy(float), "full test split"
    return (pd.to_numeric(df["clean_acc"], errors="coerce") / 100).to_numpy(float), "the n measured (full split unknown)"


def relations(df: pd.DataFrame, seed: int = 0) -> list[Relation]:
    """Spearman(curvedness, Y) across verified models (training-series rows left out), exact permutation p."""
    # deferred: scipy, needed only here
    from robcurve import acrossmodels as A

    if df.empty or CURVATURE not in df:
        return []
    base = df[(df["series"] == "") & df[CURVATURE].notna() & (df["status"] == "verified") & (df["flags"] == "")]
    acc, acc_src = full_test_accuracy(base)
    out = []
    for y in RELATED:
        if y not in df:
            continue
        keep = base[y].notna().to_numpy()
        sub = base[keep]
        xv, yv, av = sub[CURVATURE].to_numpy(float), sub[y].to_numpy(float), acc[keep]
        t = A.spearman_test(xv, yv, seed)
        ci = (stats.bootstrap_percentile([xv, yv], stats.spearman, BOOT, seed)
              if t.n >= A.MIN_BOOTSTRAP_MODELS else None)
        pr, pp = A.partial_spearman(xv, yv, av, seed) if t.n >= 4 else (math.nan, math.nan)
        out.append(Relation(CURVATURE, y, t.n, t.rho, ci[0] if ci else None, ci[1] if ci else None,
                            None if math.isnan(t.p) else t.p, "", t.p_min, t.rho_critical, None, pr, pp,
                            f"{t.method}; partial rho given clean accuracy on {acc_src}"))
    adj = A.adjust([r.p if r.p is not None and (r.p_min or 1) <= A.ALPHA else math.nan for r in out], "holm")
    for r, pa in zip(out, adj, strict=True):
        r.p_adj = None if math.isnan(pa) else pa
        r.verdict = relation_verdict(r)
    return out


def relation_verdict(r: Relation) -> str:
    # deferred: scipy, needed only here
    from robcurve import acrossmodels as A

    if r.n < 4:
        return f"too few models to conclude (n = {r.n})"
    if r.p is None:
        return "undefined (a column is constant)"
    if (r.p_min or 1) > A.ALPHA:
        return f"untestable at this n (ties: the smallest achievable p is {r.p_min:.3f} > {A.ALPHA:g})"
    p = r.p_adj if r.p_adj is not None else r.p
    if p < A.ALPHA:
        return f"{'positive' if r.rho > 0 else 'negative'} relation (Holm-adjusted p = {p:.3f})"
    return (f"no evidence of a relation (Holm-adjusted p = {p:.3f}); at n = {r.n} only |rho| >= "
            f"{r.rho_critical:.2f} would be significant")


FAMILY_CONTRASTS = (("transformer", "cnn"), ("transformer", "mlp"), ("mlp", "cnn"))
#: per-model statistics whose family contrasts the boards report (the paper's findings 1-4), when measured
CONTRASTED = (CURVATURE, "spearman_bw_curvedness_travel", "ajo_ratio_minus_null_median", "ajo_jumped_out_share",
              "ablation_attention_ratio_median", "ablation_gates_ratio_median", "sece")
SEED_GROUP = re.compile(r"^(.*)-s\d+$")  # population ids <arch>-s<seed>


def family_contrasts(df: pd.DataFrame, seed: int = 0) -> list[dict[str, Any]]:
    """Median headline curvedness of one family minus another, models as the unit (exact permutation p)."""
    # deferred: scipy, needed only here
    from robcurve import acrossmodels as A

    base = df[(df["series"] == "") & (df["status"] == "verified") & (df["flags"] == "")]
    out = []
    for m in CONTRASTED:
        if m not in base:
            continue
        sub = base[base[m].notna()]
        for a, b in FAMILY_CONTRASTS:
            if (sub["family"] == a).sum() and (sub["family"] == b).sum():
                c = A.family_contrast(sub[m].to_numpy(float), sub["family"].to_numpy(), a, b, seed)
                c["metric"] = m
                out.append(c)
    adj = A.adjust([c["p"] for c in out], "holm")
    for c, pa in zip(out, adj, strict=True):
        c["p_holm"] = pa
    return out


def seed_spread(df: pd.DataFrame, cols: list[str] | None = None) -> pd.DataFrame:
    """Between-seed spread (min, max, SD over seeds) of each metric, per architecture with >= 2 seeds."""
    cols = cols or [CURVATURE, "travel_median", "deepfool_l2_median", "pgd_distance_median", "sece", "ece"]
    cols = [c for c in cols if c in df]
    grp = df["id"].map(lambda i: (SEED_GROUP.match(str(i)) or [None, None])[1])
    recs = []
    for g, sub in df[grp.notna()].groupby(grp[grp.notna()]):
        if len(sub) < 2:
            continue
        rec: dict[str, Any] = {"architecture": g, "seeds": len(sub), "clean_acc_sd": float(sub["clean_acc"].std())}
        for c in cols:
            v = pd.to_numeric(sub[c], errors="coerce")
            rec[f"{c}_min"], rec[f"{c}_max"], rec[f"{c}_sd"] = float(v.min()), float(v.max()), float(v.std())
        recs.append(rec)
    return pd.DataFrame(recs)


def per_sample_frame(entries: list[Entry], root: Path) -> pd.DataFrame:
    """Per-sample window curvedness, travel distance and DeepFool L2 of every verified entry (from its samples file)."""
    recs = []
    for e in entries:
        if e.robcurve is None or e.status() != "verified" or e.robcurve.series or e.robcurve.flags:
            continue
        p = Path(root) / e.dataset / e.threat_model / f"{e.id}{SAMPLES_SUFFIX}"
        if not p.is_file():  # an entry without per-sample results (not made by submit): not in the mixed model
            continue
        rows, _ = read_samples(p, Path(root))
        by: dict[int, dict[str, Any]] = {}
        for sample, _, m, _, v in rows:
            if m == "window":
                by.setdefault(sample, {}).update(curv=v.get("feat_side"), t=None if v.get("censored") else v.get("t"),
                                                 correct=v.get("correct"))
            elif m == "deepfool":
                by.setdefault(sample, {}).update(df_l2=v.get("l2") if v.get("success") else None)
        acc = _full_acc(e)
        for sample, r in by.items():
            recs.append({"model": e.id, "family": e.family, "acc": acc if acc is not None else (e.clean_acc or 0) / 100,
                         "sample": sample, **r})
    return pd.DataFrame(recs)


def mixed_relations(entries: list[Entry], root: Path) -> list[dict[str, Any]]:
    """Per-sample curvedness -> log distance, a random intercept per model, family and full-split accuracy fixed."""
    # deferred: scipy, needed only here
    from robcurve import acrossmodels as A

    ps = per_sample_frame(entries, root)
    if ps.empty or "curv" not in ps or ps["model"].nunique() < 4:
        return []
    ps = ps[ps["correct"].astype(bool)].copy()
    out = []
    for ycol, label in (("t", "log travel distance (L-inf eps)"), ("df_l2", "log DeepFool L2")):
        if ycol not in ps:
            continue
        d = ps[["model", "family", "acc", "curv", ycol]].dropna()
        d = d[d[ycol] > 0]
        d["logy"] = np.log(d[ycol].astype(float))
        d["curv"] = d["curv"].astype(float)
        fixed = ("family", "acc") if d["family"].nunique() > 1 else ("acc",)
        try:
            r = A.mixed_model(d, "logy", "curv", "model", fixed)
        except (ValueError, np.linalg.LinAlgError) as err:  # pragma: no cover - a degenerate population
            r = {"error": str(err)}
        r["y"], r["x"] = label, "per-sample boundary-side curvedness 1 - R^2"
        out.append(r)
    return out


def matched_pairs(df: pd.DataFrame, tol: float = MATCH_TOL) -> pd.DataFrame:
    """Transformer-CNN pairs whose clean accuracies differ by at most ``tol`` points, with their differences."""
    if df.empty or CURVATURE not in df:
        return pd.DataFrame()
    t = df[(df["family"] == "transformer") & df[CURVATURE].notna()]
    c = df[(df["family"] == "cnn") & df[CURVATURE].notna()]
    recs = []
    for (_, a), (_, b) in itertools.product(t.iterrows(), c.iterrows()):
        if a["dataset"] != b["dataset"] or a["threat_model"] != b["threat_model"]:
            continue
        fa, fb = a.get("test_acc_full"), b.get("test_acc_full")
        if fa is None or fb is None or (isinstance(fa, float) and math.isnan(fa)) or (isinstance(fb, float) and math.isnan(fb)):
            continue  # matching uses accuracy on the full test split, never the n measured
        if abs(100 * (fa - fb)) <= tol:
            rec = {"transformer": a["id"], "cnn": b["id"], "test_acc_t": fa, "test_acc_c": fb}
            for m in (CURVATURE, "travel_median", "deepfool_l2_median", "sece"):
                if m in df:
                    rec[f"{m}_t"], rec[f"{m}_c"] = a[m], b[m]
            recs.append(rec)
    return pd.DataFrame(recs)


def matched_verdict(pairs: pd.DataFrame) -> str:
    if pairs.empty:
        return (f"no Transformer-CNN pair within {MATCH_TOL:g} points of clean accuracy on the full test split: "
                "no accuracy-matched comparison")
    more = int((pairs[f"{CURVATURE}_t"] > pairs[f"{CURVATURE}_c"]).sum())
    k = len(pairs)
    return (f"{more} of {k} accuracy-matched pairs have the Transformer more curved (median 1 - R^2); "
            + ("too few pairs to conclude" if k < 5 else "a sign test over pairs sharing models is not independent; read as descriptive"))


# -- formatting ------------------------------------------------------------------------------------------
def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "inf" if isinstance(v, float) and v == math.inf else "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _cell(row: pd.Series, m: str) -> str:
    v, lo, hi = row.get(m), row.get(f"{m}_lo"), row.get(f"{m}_hi")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = _f(v)
    if lo is not None and not (isinstance(lo, float) and math.isnan(lo)):
        s += f" [{_f(lo)}, {_f(hi)}]"
    return s


def short(m: str) -> str:
    return m.replace("_median", "").replace("spearman_curvedness_", "ρ(curv,").replace("_", " ") + (
        ")" if m.startswith("spearman_curvedness_") else "")


def md_escape(text: Any) -> str:
    """Text made inert in a Markdown table cell: HTML escaped, table syntax and code spans neutralised."""
    s = html.escape(" ".join(str(text).split()), quote=True)  # newlines and tabs become one space
    for a, b in (("|", "&#124;"), ("`", "&#96;"), ("[", "&#91;"), ("]", "&#93;"), ("*", "&#42;"), ("_", "&#95;"),
                 ("\\", "&#92;")):
        s = s.replace(a, b)
    return s


def csv_text(df: pd.DataFrame) -> str:
    """CSV whose text cells cannot start a spreadsheet formula (OWASP: a leading = + - @ tab or CR gets a ')."""
    def neutral(v: Any) -> Any:
        if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
            return "'" + v
        return v

    out = df.copy()
    for c in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_bool_dtype(out[c])):
            out[c] = out[c].map(neutral)
    return out.to_csv(index=False)


def robust_label(r: pd.Series) -> str:
    if r["robust_acc"] is None or (isinstance(r["robust_acc"], float) and math.isnan(r["robust_acc"])):
        return "–"
    src = {"PGD (robcurve)": "PGD"}.get(r["robust_source"], r["robust_source"])
    return f"{_f(r['robust_acc'], 4)} {src}"


def text_table(df: pd.DataFrame, fmt: str = "github", cols: list[str] | None = None, markdown: bool | None = None) -> str:
    """The ranking as a text table; ``markdown`` (default: when fmt is github) escapes every free-text cell."""
    from tabulate import tabulate

    esc = md_escape if (fmt == "github" if markdown is None else markdown) else (lambda v: " ".join(str(v).split()))
    cols = cols or [m for m, _ in columns()]
    body = []
    for _, r in df.iterrows():
        mark = (" †" if r["series"] else "") + (" (unverified)" if r.get("status") == "unverified" else "") + (
            f" ({r['flags']})" if r.get("flags") else "")
        body.append([r["rank"], esc(r["name"]) + mark, esc(r["family"]), _f(r["clean_acc"], 4), esc(robust_label(r)),
                     _f(r["n"]), *[_cell(r, m) for m in cols]])  # numbers and intervals are ours: no escaping needed
    return tabulate(body, headers=["#", "model", "family", "clean %", "robust %", "n", *[short(m) for m in cols]],
                    tablefmt=fmt, disable_numparse=True)


def relations_table(rels: list[Relation], fmt: str = "github") -> str:
    from tabulate import tabulate

    body = [(f"{r.x} vs {r.y}", r.n, _f(r.rho), _f(r.p), _f(r.p_adj), _f(r.p_min), _f(r.rho_critical),
             "–" if r.lo is None else f"[{_f(r.lo)}, {_f(r.hi)}]", _f(r.partial_rho), _f(r.partial_p), r.verdict)
            for r in rels]
    return tabulate(body, headers=["relation (Spearman across models)", "n models", "rho", "exact p", "Holm p",
                                   "smallest p possible", "|rho| needed", "95% bootstrap (n >= 15)",
                                   "partial rho | acc", "partial p", "verdict"], tablefmt=fmt, disable_numparse=True)


def latex(df: pd.DataFrame, cols: list[str] | None = None) -> str:
    """A booktabs table with the intervals, ready for ``\\input``."""
    cols = cols or [CURVATURE, "travel_median", "deepfool_l2_median", "pgd_distance_median", "sece", "ece"]
    cols = [c for c in cols if c in df]

    def esc(s: Any) -> str:
        s = str(s)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                     ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
            s = s.replace(a, b)
        return s

    def cell(r: pd.Series, m: str) -> str:
        v, lo, hi = r.get(m), r.get(f"{m}_lo"), r.get(f"{m}_hi")
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "--"
        s = f"{v:.3g}"
        if lo is not None and not (isinstance(lo, float) and math.isnan(lo)):
            s += f" {{\\scriptsize [{lo:.3g}, {hi:.3g}]}}"
        return s

    head = " & ".join(["\\#", "Model", "Clean (\\%)", "Robust (\\%)", *[esc(short(c)) for c in cols]])
    lines = ["% generated by `robcurve leaderboard --format latex`; needs \\usepackage{booktabs}",
             "\\begin{tabular}{r l r r " + "r " * len(cols) + "}", "\\toprule", head + " \\\\", "\\midrule"]
    for _, r in df.iterrows():
        rob = "--" if r["robust_acc"] is None else f"{r['robust_acc']:.2f}"
        lines.append(" & ".join([str(r["rank"]), esc(r["name"]) + ("$^\\dagger$" if r["series"] else ""),
                                 "--" if r["clean_acc"] is None else f"{r['clean_acc']:.2f}", rob,
                                 *[cell(r, c) for c in cols]]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def scatter_png(df: pd.DataFrame) -> bytes | None:
    """Curvedness against each attack distance and calibration error, one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if df.empty or CURVATURE not in df or df[CURVATURE].notna().sum() == 0:
        return None
    ys = [y for y in RELATED if y in df]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    colours = {"transformer": "tab:orange", "cnn": "tab:blue", "other": "tab:gray"}
    for ax, y in zip(axes.flat, ys, strict=False):
        for fam, sub in df[df[CURVATURE].notna() & df[y].notna()].groupby("family"):
            mk = ["o" if s == "" else "^" for s in sub["series"]]
            for (_, r), m in zip(sub.iterrows(), mk, strict=True):
                ax.scatter(r[CURVATURE], r[y], color=colours.get(fam, "tab:gray"), marker=m, s=30)
                ax.annotate(r["id"], (r[CURVATURE], r[y]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        meta = _meta(y)
        ax.set_xlabel("median curvedness 1 − R²")
        ax.set_ylabel(f"{y} ({meta.unit})")
    for ax in list(axes.flat)[len(ys):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=f) for f, c in colours.items()]
    handles.append(plt.Line2D([], [], color="k", marker="^", ls="", label="training checkpoint"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize="small")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return png_bytes(fig, dpi=90)


def _extras_markdown(ex: dict[str, Any]) -> list[str]:
    """Family contrasts, the mixed model and the between-seed spread of one board (when there are any)."""
    from tabulate import tabulate

    parts: list[str] = []
    if ex.get("contrasts"):
        parts += ["### Family contrasts (models as the unit)", "",
                  "Difference of the family medians of a per-model statistic; exact permutation p over the family "
                  "labels, Holm-adjusted over the rows of this table.", "",
                  tabulate([[short(c["metric"]) if c["metric"] != CURVATURE else "headline curvedness",
                             f"{c['a']} − {c['b']}", f"{c['n_a']} vs {c['n_b']}", _f(c["diff"]), _f(c["p"]),
                             _f(c.get("p_holm")), c["method"]] for c in ex["contrasts"]],
                           headers=["statistic", "families", "models", "difference of medians", "p", "Holm p", "test"],
                           tablefmt="github", disable_numparse=True), ""]
    for r in ex.get("mixed", []):
        if "coef" in r:
            parts += [f"Mixed model over samples ({md_escape(r['formula'])}; statsmodels MixedLM, REML): "
                      f"{md_escape(r['x'])} → {md_escape(r['y'])}: coefficient {r['coef']:.3f} "
                      f"[{r['lo']:.3f}, {r['hi']:.3f}] (Wald 95%), p = {r['p']:.2g}, n = {r['n_samples']} samples of "
                      f"{r['n_models']} models ({md_escape(r['unit'])}).", ""]
    sp = ex.get("spread")
    if isinstance(sp, pd.DataFrame) and not sp.empty:
        cols = [c for c in (CURVATURE, "travel_median", "deepfool_l2_median", "sece") if f"{c}_sd" in sp]
        parts += ["### Between-seed spread (the null every other factor is judged against)", "",
                  tabulate([[md_escape(r["architecture"]), r["seeds"], _f(r["clean_acc_sd"])]
                            + [f"{_f(r[f'{c}_min'])}–{_f(r[f'{c}_max'])} (SD {_f(r[f'{c}_sd'])})" for c in cols]
                            for _, r in sp.iterrows()],
                           headers=["architecture", "seeds", "clean % SD", *[short(c) for c in cols]],
                           tablefmt="github", disable_numparse=True), ""]
    return parts


def markdown(df: pd.DataFrame, rels_by: dict[tuple[str, str], list[Relation]],
             pairs_by: dict[tuple[str, str], pd.DataFrame], plot_names: dict[tuple[str, str], str],
             extras_by: dict[tuple[str, str], dict[str, Any]] | None = None) -> str:
    parts = ["# robcurve leaderboard", "",
             "Generated by `robcurve leaderboard render` from the entries in this folder; do not edit by hand. "
             "Interactive page: [index.html](index.html). Ranked by robust accuracy (AutoAttack where evaluated, else "
             "robcurve's PGD, marked), then clean accuracy; entries whose fields do not verify are listed after "
             "the verified ones, marked (unverified). Values are medians or shares with their 95% interval "
             "(method per metric in `robcurve metrics`); curvature carries its scale (below); "
             "† marks a training checkpoint. Definitions: [docs/METHOD.md](../docs/METHOD.md).", ""]
    for (ds, th), sub in df.groupby(["dataset", "threat_model"], sort=True):
        parts += [f"## {md_escape(ds)} / {md_escape(th)}", "", text_table(sub), ""]
        scales = sorted({c for c in sub.get(f"{CURVATURE}_condition", pd.Series(dtype=object)) if isinstance(c, str) and c})
        ns = sorted({int(v) for v in sub["n"].dropna()})
        parts += [f"Samples per model: {', '.join(map(str, ns)) or '–'}; headline curvedness: "
                  f"{'; '.join(md_escape(c) for c in scales) or '–'}; compute time per model on the submitter's machine: "
                  + ", ".join(f"{md_escape(r['id'])} {r['compute_s']:.0f} s" for _, r in sub.iterrows()
                              if pd.notna(r["compute_s"]) and r["compute_s"]) + ".", ""]
        rels = rels_by[(ds, th)]
        n = max((r.n for r in rels), default=0)
        parts += ["### Relations across models", "",
                  f"Unit of inference: the model (n = {n} verified models; training checkpoints † and flagged entries "
                  "left out). Test: the exact permutation distribution of Spearman's rho (all orderings up to 9 "
                  "models, else 100,000 seeded ones), Holm-adjusted over the rows of this table; "
                  + (f"at n = {n}, |rho| >= {rels[0].rho_critical:.2f} is needed for p < 0.05 (the power line). "
                     if rels and rels[0].rho_critical is not None and math.isfinite(rels[0].rho_critical) else "")
                  + "No bootstrap interval over fewer than 15 models. Partial rho: given clean accuracy on the full "
                  "test split (zoo cards).", "", relations_table(rels), ""]
        parts += _extras_markdown((extras_by or {}).get((ds, th), {}))
        pairs = pairs_by[(ds, th)]
        parts += ["### Transformer vs CNN at matched clean accuracy", "", matched_verdict(pairs), ""]
        if not pairs.empty:
            from tabulate import tabulate

            parts += [tabulate([[md_escape(v) for v in row] for row in pairs.round(4).to_numpy().tolist()],
                               headers=list(pairs.columns), tablefmt="github", disable_numparse=True), ""]
        if (ds, th) in plot_names:
            parts += [f"![headline curvedness against attack distance and calibration]({plot_names[(ds, th)]})", ""]
    return "\n".join(parts)


_JS = """
function sortBy(th){const t=th.closest('table');const i=[...th.parentNode.children].indexOf(th);
const rows=[...t.tBodies[0].rows];const first=th.dataset.best==='low'?'asc':'desc';
const dir=th.dataset.dir?(th.dataset.dir==='asc'?'desc':'asc'):first;
t.querySelectorAll('th').forEach(h=>{h.dataset.dir='';h.querySelector('.ind').textContent='';});
th.dataset.dir=dir;th.querySelector('.ind').textContent=dir==='asc'?' \u25B2':' \u25BC';const asc=dir==='asc';
rows.sort((a,b)=>{const x=a.cells[i].dataset.v,y=b.cells[i].dataset.v;const fx=parseFloat(x),fy=parseFloat(y);
let c=(!isNaN(fx)&&!isNaN(fy))?fx-fy:(isNaN(fx)&&!isNaN(fy)?1:(!isNaN(fx)&&isNaN(fy)?-1:String(x).localeCompare(String(y))));
if(isNaN(fx)!==isNaN(fy))return c;return asc?c:-c;});rows.forEach(r=>t.tBodies[0].appendChild(r));}
function applyFilters(){const f={};document.querySelectorAll('select.filter').forEach(s=>f[s.dataset.key]=s.value);
document.querySelectorAll('#board tbody tr').forEach(r=>{let show=true;for(const k in f){if(f[k]&&r.dataset[k]!==f[k])show=false;}
r.style.display=show?'':'none';});}
function showCol(k,on){document.querySelectorAll('#board [data-col="'+k+'"]').forEach(c=>c.style.display=on?'':'none');}
document.addEventListener('DOMContentLoaded',()=>{document.querySelectorAll('#board th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
document.querySelectorAll('select.filter').forEach(s=>s.addEventListener('change',applyFilters));
document.querySelectorAll('input.colpick').forEach(c=>{showCol(c.value,c.checked);c.addEventListener('change',()=>showCol(c.value,c.checked));});});
"""

#: columns shown before the reader picks others (they fit a 1366 px screen)
DEFAULT_COLUMNS = ("rank", "id", "family", "clean", "robust", CURVATURE, "travel_median", "deepfool_l2_median",
                   "pgd_distance_median", "sece", "ece")
_CSS = ("body{font-family:sans-serif;margin:1em;max-width:100%;box-sizing:border-box}"
        ".scroll{overflow-x:auto;max-width:100%;border:1px solid #ddd}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;white-space:nowrap}"
        "th{cursor:pointer;background:#f3f3f3}tbody tr:nth-child(even){background:#fafafa}"
        "#board td[data-col='id'],#board th[data-col='id']{position:sticky;left:0;background:#fff;z-index:1}"
        "#board th[data-col='id']{background:#f3f3f3}.legend dt{font-weight:bold;margin-top:.4em}.legend dd{margin-left:1em}"
        ".cols label{display:inline-block;margin-right:.8em;font-size:13px}.plot{width:100%;max-width:720px;height:420px}"
        "@media (max-width:600px){body{margin:.4em}.plot{height:320px}}")


def _units(meta: Any) -> str:
    return f"{meta.unit}; {'higher' if meta.direction == 'higher' else 'lower' if meta.direction == 'lower' else 'no direction'} is better"


AXIS_WORDS = {CURVATURE: "headline curvedness 1 − R² (boundary-side window)", "travel_median": "median travel distance (L∞ ε)",
              "deepfool_l2_median": "median DeepFool distance (L2, pixels in [0, 1])",
              "pgd_distance_median": "median PGD distance (L∞ ε)", "pgd_robust_acc": "PGD robust accuracy (fraction)",
              "sece": "signed ECE (accuracy − confidence)", "ece": "ECE (fraction)"}


def scatter_figures(df: pd.DataFrame, rels: list[Relation]) -> list[dict[str, Any]]:
    """One interactive scatter per relation (plotly figure dicts): points with interval error bars,
    hover for the model, colour per family, rho / exact p / n in the title."""
    import plotly.graph_objects as go

    figs = []
    colours = {"transformer": "#d95f02", "cnn": "#1b9e77", "mlp": "#7570b3", "other": "#666666"}
    for r in rels:
        sub = df[(df["series"] == "") & df[CURVATURE].notna() & df[r.y].notna() & (df["status"] == "verified")]
        if sub.empty:
            continue
        fig = go.Figure()
        for fam, g in sub.groupby("family"):
            def err(col: str, g: pd.DataFrame = g) -> dict[str, Any] | None:
                lo, hi = f"{col}_lo", f"{col}_hi"
                if lo not in g or g[lo].isna().all():
                    return None
                v = g[col].astype(float)
                return {"type": "data", "symmetric": False, "array": (g[hi].astype(float) - v).fillna(0).tolist(),
                        "arrayminus": (v - g[lo].astype(float)).fillna(0).tolist(), "thickness": 1}
            fig.add_trace(go.Scatter(x=g[CURVATURE].astype(float).tolist(), y=g[r.y].astype(float).tolist(),
                                     mode="markers", name=str(fam), marker={"color": colours.get(str(fam), "#666"), "size": 9},
                                     error_x=err(CURVATURE), error_y=err(r.y), text=[str(i) for i in g["id"]],
                                     hovertemplate="%{text}<br>x=%{x:.4g}<br>y=%{y:.4g}<extra>" + html.escape(str(fam)) + "</extra>"))
        p = "–" if r.p is None else f"{r.p:.3g}"
        fig.update_layout(title={"text": html.escape(f"ρ = {_f(r.rho)}, exact p = {p}, n = {r.n} models"), "font": {"size": 14}},
                          xaxis_title=AXIS_WORDS.get(CURVATURE, CURVATURE), yaxis_title=AXIS_WORDS.get(r.y, r.y),
                          legend_title="family", margin={"l": 60, "r": 10, "t": 40, "b": 50}, template="plotly_white")
        figs.append({"y": r.y, "figure": fig.to_plotly_json()})
    return figs


def html_page(df: pd.DataFrame, rels_by: dict[tuple[str, str], list[Relation]], pngs: dict[tuple[str, str], bytes] | None = None,
              plotly_src: str | None = "plotly.min.js") -> str:
    """A static page that reads on any screen: a scrolling table with a sticky model column, a column chooser,
    sort indicators, a legend with every metric's definition, and interactive scatter plots (plotly, offline:
    ``plotly_src`` beside the page, or inlined when None). All text escaped."""
    import json as _json

    e = html.escape
    cols = [m for m, _ in columns()]
    if CURVATURE in df:
        cols = [CURVATURE, *[c for c in cols if c not in HEADLINE_SOURCES]]
    heads = [("rank", "#", "rank: verified entries by robust accuracy, then clean accuracy", "high"),
             ("id", "model", "entry id (display name in the tooltip)", ""), ("family", "family", "architecture family", ""),
             ("dataset", "dataset", "", ""), ("threat", "threat", "", ""),
             ("clean", "clean %", "clean accuracy in % (higher is better)", "high"),
             ("robust", "robust %", "robust accuracy in %: AutoAttack where evaluated, else robcurve PGD (higher is better)", "high")]
    legend = []
    for m in cols:
        meta = _meta(HEADLINE_SOURCES[0] if m == CURVATURE else m)
        best = {"higher": "high", "lower": "low"}.get(meta.direction, "")
        heads.append((m, short(m) if m != CURVATURE else "curvedness", f"{meta.description} [{_units(meta)}]", best))
        legend.append(f"<dt>{e(short(m) if m != CURVATURE else 'curvedness')}</dt><dd>{e(meta.description)} "
                      f"[{e(_units(meta))}]</dd>")
    heads[0] = ("rank", "#", heads[0][2], "low")
    th = "".join(f'<th title="{e(tip)}" data-col="{e(k)}" data-best="{e(best)}">{e(label)}<span class="ind"></span></th>'
                 for k, label, tip, best in heads)
    body = []
    for _, r in df.iterrows():
        def td(k: str, v: Any, text: str | None = None) -> str:
            dv = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
            return f'<td data-col="{e(k)}" data-v="{e(str(dv))}">{e(text if text is not None else _f(v))}</td>'

        mark = (' <span title="training checkpoint">†</span>' if r["series"] else "") + (
            ' <span title="a field does not verify">(unverified)</span>' if r.get("status") == "unverified" else "")
        cells = [td("rank", r["rank"]), f'<td data-col="id" data-v="{e(str(r["id"]))}" title="{e(str(r["name"]))}">'
                 f'{e(str(r["id"]))}{mark}</td>', td("family", r["family"], r["family"]),
                 td("dataset", r["dataset"], r["dataset"]), td("threat", r["threat_model"], r["threat_model"]),
                 td("clean", r["clean_acc"], _f(r["clean_acc"], 4)), td("robust", r["robust_acc"], robust_label(r))]
        cells += [td(m, r.get(m), _cell(r, m)) for m in cols]
        body.append(f'<tr data-dataset="{e(str(r["dataset"]))}" data-threat="{e(str(r["threat_model"]))}" '
                    f'data-family="{e(str(r["family"]))}">{"".join(cells)}</tr>')

    def select(key: str, values: list[str]) -> str:
        opts = "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in values)
        return f'<label>{e(key)} <select class="filter" data-key="{e(key)}"><option value="">all</option>{opts}</select></label>'

    filters = " ".join([select("dataset", sorted(df["dataset"].unique())) if not df.empty else "",
                        select("threat", sorted(df["threat_model"].unique())) if not df.empty else "",
                        select("family", sorted(df["family"].unique())) if not df.empty else ""])
    picks = "".join(f'<label><input type="checkbox" class="colpick" value="{e(k)}"{" checked" if k in DEFAULT_COLUMNS else ""}>'
                    f'{e(label)}</label>' for k, label, _, _ in heads if k not in ("rank", "id"))
    rel_html, plots = [], []
    for (ds, thr), rels in rels_by.items():
        rows = "".join(f"<tr><td>{e(short(r.x) if r.x != CURVATURE else 'curvedness')} vs {e(r.y)}</td><td>{r.n}</td>"
                       f"<td>{e(_f(r.rho))}</td><td>{e(_f(r.p))}</td><td>{e(_f(r.p_adj))}</td><td>{e(_f(r.rho_critical))}</td>"
                       f"<td>{e(_f(r.partial_rho))}</td><td>{e(r.verdict)}</td></tr>" for r in rels)
        rel_html.append(f"<h2>Relations across models: {e(ds)} / {e(thr)}</h2><div class='scroll'><table class='rel'><thead><tr>"
                        "<th>relation</th><th>n models</th><th>rho</th><th>exact p</th><th>Holm p</th><th>|rho| needed</th>"
                        f"<th>partial rho | accuracy</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table></div>")
        sub = df[(df["dataset"] == ds) & (df["threat_model"] == thr)]
        for fig in scatter_figures(sub, rels):
            pid = f"plot-{len(plots)}"
            plots.append((pid, fig["figure"]))
            rel_html.append(f'<div class="plot" id="{pid}" role="img" aria-label="{e(fig["y"])} against curvedness"></div>')
    if plots:
        if plotly_src is None:
            from plotly.offline import get_plotlyjs

            lib = f"<script>{get_plotlyjs()}</script>"
        else:
            lib = f'<script src="{e(plotly_src)}"></script>'
        data = _json.dumps({pid: fig for pid, fig in plots}).replace("</", "<\\/")
        draw = (f"{lib}<script>const FIGS={data};for(const id in FIGS){{const f=FIGS[id];"
                "Plotly.newPlot(id,f.data,f.layout,{responsive:true,displaylogo:false});}</script>")
    else:
        draw = ""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><title>robcurve leaderboard</title>"
            f"<style>{_CSS}</style></head><body>"
            "<h1>robcurve leaderboard</h1><p>Curvature, attack distance and calibration of vision models "
            "(Kim et al., <i>Curved Representation Space of Vision Transformers</i>, AAAI 2024). Click a column to sort "
            "(first click: best first, ▲▼ shows the order); choose columns below. † = training checkpoint. Intervals are 95%. "
            "Definitions: <a href='https://github.com/robcurve/robcurve/blob/main/docs/METHOD.md'>docs/METHOD.md</a>.</p>"
            f"<p>{filters}</p><details class='cols'><summary>columns</summary>{picks}</details>"
            f"<div class='scroll'><table id='board'><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            f"<h2>What the columns mean</h2><dl class='legend'>{''.join(legend)}</dl>"
            f"{''.join(rel_html)}<script>{_JS}</script>{draw}</body></html>\n")


def render_all(entries: list[Entry], out: Path) -> list[Path]:
    """Write README.md, index.html (+ plotly.min.js), leaderboard.csv, leaderboard.tex, relations.json and plots."""
    import json

    df = tidy(entries)
    rels_by: dict[tuple[str, str], list[Relation]] = {}
    pairs_by: dict[tuple[str, str], pd.DataFrame] = {}
    extras_by: dict[tuple[str, str], dict[str, Any]] = {}
    names: dict[tuple[str, str], str] = {}
    written = []
    if not df.empty:
        for key, sub in df.groupby(["dataset", "threat_model"], sort=True):
            rels_by[key] = relations(sub)
            pairs_by[key] = matched_pairs(sub)
            board = [e for e in entries if (e.dataset, e.threat_model) == key]
            extras_by[key] = {"contrasts": family_contrasts(sub), "mixed": mixed_relations(board, out),
                              "spread": seed_spread(sub)}
            png = scatter_png(sub)
            if png:
                names[key] = f"relations_{key[0]}_{key[1]}.png"
                atomic_write_bytes(out / names[key], png)
                written.append(out / names[key])
    from plotly.offline import get_plotlyjs

    files = {
        "README.md": markdown(df, rels_by, pairs_by, names, extras_by) + "\n",
        "index.html": html_page(df, rels_by),
        "plotly.min.js": get_plotlyjs(),
        "leaderboard.csv": csv_text(df),
        "leaderboard.tex": latex(df),
        "relations.json": json.dumps(json_safe({f"{k[0]}/{k[1]}": {"relations": [r.to_dict() for r in v],
                                                          "family_contrasts": extras_by[k]["contrasts"],
                                                          "mixed_models": extras_by[k]["mixed"],
                                                          "seed_spread": json.loads(extras_by[k]["spread"].to_json(orient="records")),
                                                          "matched_pairs": json.loads(pairs_by[k].to_json(orient="records")),
                                                          "matched_verdict": matched_verdict(pairs_by[k])}
                                      for k, v in rels_by.items()}), indent=2, allow_nan=False, default=_json_num) + "\n",
    }
    for name, text in files.items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    return written


def _json_num(v: Any) -> Any:
    if isinstance(v, np.integer | np.floating):
        return None if isinstance(v, np.floating) and not math.isfinite(float(v)) else v.item()
    raise TypeError(type(v).__name__)
