"""Leaderboard tables (terminal, Markdown, CSV, LaTeX, HTML) and cross-model relations.

Columns, units, directions and descriptions come from the metric registry (metrics with
``leaderboard=True``); nothing here lists metric names except the relations asked about
(curvedness against the attack distances and calibration, the paper's question).
Ranking follows RobustBench: robust accuracy (AutoAttack where evaluated, else robcurve's
PGD, marked), then clean accuracy.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robcurve import stats
from robcurve.leaderboard.schema import Entry

CURVATURE = "curvedness_median"
RELATED = ("travel_median", "deepfool_l2_median", "pgd_distance_median", "pgd_robust_acc", "sece", "ece")
MATCH_TOL = 1.0  # percentage points of clean accuracy for an accuracy-matched pair
MIN_MODELS = 5  # fewer models than this: a correlation across models is not interpreted
BOOT = 2000


def columns() -> list[tuple[str, str | None]]:
    """(metric, condition) of every leaderboard column, from the registry; ``None`` = its only condition."""
    from robcurve.run.metrics import METRICS

    out = []
    for n in METRICS.names_in_order():
        m = METRICS.get(n)
        if m.leaderboard and n != "clean_acc":
            out.append((n, "mean" if m.mean_over_conditions else None))
    return out


def _meta(metric: str) -> Any:
    from robcurve.run.metrics import METRICS

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
        rec: dict[str, Any] = {
            "id": e.id, "name": e.name, "family": e.family, "dataset": e.dataset, "threat_model": e.threat_model,
            "eps": e.eps, "architecture": e.architecture, "series": _series_label(e), "imported": e.imported,
            "clean_acc": e.clean_acc, "robust_acc": rob, "robust_source": src,
            "n": e.robcurve.n if e.robcurve else None,
            "verified": bool(e.robcurve and e.robcurve.verification and e.robcurve.verification.mismatches == 0),
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
    df = df.sort_values(["dataset", "threat_model", "robust_acc", "clean_acc", "id"],
                        ascending=[True, True, False, False, True], na_position="last", kind="mergesort")
    df.insert(0, "rank", df.groupby(["dataset", "threat_model"]).cumcount() + 1)
    return df.reset_index(drop=True)


def _series_label(e: Entry) -> str:
    s = e.robcurve.series if e.robcurve else None
    return f"{s['of']} epoch {s['epoch']}" if s else ""


# -- relations -------------------------------------------------------------------------------------
@dataclass
class Relation:
    x: str
    y: str
    n: int
    rho: float
    lo: float | None
    hi: float | None
    p: float | None
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


def _perm_p(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Two-sided permutation p-value of Spearman's rho (exact for n <= 8)."""
    rho = abs(stats.spearman(x, y))
    n = len(x)
    if n <= 8:
        perms = itertools.permutations(range(n))
        vals = [abs(stats.spearman(x, y[list(p)])) for p in perms]
    else:
        rng = np.random.default_rng(seed)
        vals = [abs(stats.spearman(x, y[rng.permutation(n)])) for _ in range(5000)]
    vals = np.asarray(vals)
    vals = vals[np.isfinite(vals)]
    return float((vals >= rho - 1e-12).mean()) if vals.size else math.nan


def relations(df: pd.DataFrame, seed: int = 0) -> list[Relation]:
    """Spearman(curvedness, Y) across the models (training-series rows left out), bootstrap over models."""
    if df.empty or CURVATURE not in df:
        return []
    base = df[(df["series"] == "") & df[CURVATURE].notna()]
    out = []
    for y in RELATED:
        if y not in df and y != "ece":
            continue
        col = y if y in df else None
        if col is None:
            continue
        sub = base[base[col].notna()]
        xv = sub[CURVATURE].to_numpy(float)
        yv = sub[col].to_numpy(float)
        n = len(sub)
        rho = stats.spearman(xv, yv) if n >= 3 else math.nan
        ci = stats.bootstrap_percentile([xv, yv], stats.spearman, BOOT, seed) if n >= 3 else None
        p = _perm_p(xv, yv, seed) if n >= 3 else None
        if n < MIN_MODELS:
            verdict = f"too few models to conclude (n = {n} < {MIN_MODELS})"
        elif p is not None and p < 0.05:
            verdict = f"{'positive' if rho > 0 else 'negative'} relation (permutation p = {p:.3f})"
        else:
            verdict = f"no evidence of a relation (permutation p = {p:.3f})" if p is not None else "undefined"
        out.append(Relation(CURVATURE, y, n, rho, ci[0] if ci else None, ci[1] if ci else None, p, verdict))
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
        if abs(a["clean_acc"] - b["clean_acc"]) <= tol:
            rec = {"transformer": a["id"], "cnn": b["id"], "clean_acc_t": a["clean_acc"], "clean_acc_c": b["clean_acc"]}
            for m in (CURVATURE, "travel_median", "deepfool_l2_median", "sece"):
                if m in df:
                    rec[f"{m}_t"], rec[f"{m}_c"] = a[m], b[m]
            recs.append(rec)
    return pd.DataFrame(recs)


def matched_verdict(pairs: pd.DataFrame) -> str:
    if pairs.empty:
        return f"no Transformer-CNN pair within {MATCH_TOL:g} points of clean accuracy: no accuracy-matched comparison"
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


def text_table(df: pd.DataFrame, fmt: str = "github", cols: list[str] | None = None) -> str:
    from tabulate import tabulate

    cols = cols or [m for m, _ in columns()]
    body = []
    for _, r in df.iterrows():
        body.append([r["rank"], r["id"] + (" †" if r["series"] else ""), r["family"], _f(r["clean_acc"], 4),
                     f"{_f(r['robust_acc'], 4)} ({r['robust_source']})" if r["robust_acc"] is not None else "–",
                     _f(r["n"]), *[_cell(r, m) for m in cols]])
    return tabulate(body, headers=["#", "model", "family", "clean %", "robust %", "n", *[short(m) for m in cols]],
                    tablefmt=fmt, disable_numparse=True)


def relations_table(rels: list[Relation], fmt: str = "github") -> str:
    from tabulate import tabulate

    body = [(f"{r.x} vs {r.y}", r.n, _f(r.rho), "–" if r.lo is None else f"[{_f(r.lo)}, {_f(r.hi)}]",
             _f(r.p), r.verdict) for r in rels]
    return tabulate(body, headers=["relation (Spearman across models)", "n models", "rho", "95% interval", "p",
                                   "verdict"], tablefmt=fmt, disable_numparse=True)


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
        lines.append(" & ".join([str(r["rank"]), esc(r["id"]) + ("$^\\dagger$" if r["series"] else ""),
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def markdown(df: pd.DataFrame, rels_by: dict[tuple[str, str], list[Relation]],
             pairs_by: dict[tuple[str, str], pd.DataFrame], plot_names: dict[tuple[str, str], str]) -> str:
    parts = ["# robcurve leaderboard", "",
             "Generated by `robcurve leaderboard render` from the entries in this folder; do not edit by hand. "
             "Interactive page: [index.html](index.html). Ranked by robust accuracy (AutoAttack where evaluated, else "
             "robcurve's PGD, marked), then clean accuracy. Values are medians or shares with their 95% interval "
             "(method per metric in `robcurve metrics`); curvature carries its scale (below); "
             "† marks a training checkpoint. Definitions: [docs/METHOD.md](../docs/METHOD.md).", ""]
    for (ds, th), sub in df.groupby(["dataset", "threat_model"], sort=True):
        parts += [f"## {ds} / {th}", "", text_table(sub), ""]
        scales = sorted({c for c in sub.get(f"{CURVATURE}_condition", pd.Series(dtype=object)) if isinstance(c, str) and c})
        ns = sorted({int(v) for v in sub["n"].dropna()})
        parts += [f"Samples per model: {', '.join(map(str, ns)) or '–'}; curvature scale: {'; '.join(scales) or '–'}; "
                  f"compute time per model on the submitter's machine: "
                  + ", ".join(f"{r['id']} {r['compute_s']:.0f} s" for _, r in sub.iterrows() if pd.notna(r["compute_s"]) and r["compute_s"]) + ".", ""]
        parts += ["### Relations across models", "", relations_table(rels_by[(ds, th)]), "",
                  "Training-series checkpoints (†) are left out of the correlations (they are not independent models).", ""]
        pairs = pairs_by[(ds, th)]
        parts += ["### Transformer vs CNN at matched clean accuracy", "", matched_verdict(pairs), ""]
        if not pairs.empty:
            from tabulate import tabulate

            parts += [tabulate(pairs.round(4).to_numpy().tolist(), headers=list(pairs.columns), tablefmt="github",
                               disable_numparse=True), ""]
        if (ds, th) in plot_names:
            parts += [f"![curvedness against attack distance and calibration]({plot_names[(ds, th)]})", ""]
    return "\n".join(parts)


_JS = """
function sortBy(th){const t=th.closest('table');const i=[...th.parentNode.children].indexOf(th);
const rows=[...t.tBodies[0].rows];const asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
rows.sort((a,b)=>{const x=a.cells[i].dataset.v,y=b.cells[i].dataset.v;const fx=parseFloat(x),fy=parseFloat(y);
let c=(!isNaN(fx)&&!isNaN(fy))?fx-fy:(isNaN(fx)&&!isNaN(fy)?1:(!isNaN(fx)&&isNaN(fy)?-1:String(x).localeCompare(String(y))));
return asc?c:-c;});rows.forEach(r=>t.tBodies[0].appendChild(r));}
function applyFilters(){const f={};document.querySelectorAll('select.filter').forEach(s=>f[s.dataset.key]=s.value);
document.querySelectorAll('#board tbody tr').forEach(r=>{let show=true;for(const k in f){if(f[k]&&r.dataset[k]!==f[k])show=false;}
r.style.display=show?'':'none';});}
document.addEventListener('DOMContentLoaded',()=>{document.querySelectorAll('#board th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
document.querySelectorAll('select.filter').forEach(s=>s.addEventListener('change',applyFilters));});
"""


def html_page(df: pd.DataFrame, rels_by: dict[tuple[str, str], list[Relation]], pngs: dict[tuple[str, str], bytes]) -> str:
    """A self-contained static page: sortable columns, filters, tooltips, scatter plots; all text escaped."""
    e = html.escape
    cols = [m for m, _ in columns()]
    heads = [("rank", "#", "rank: robust accuracy, then clean accuracy"), ("id", "model", "entry id (name in tooltip)"),
             ("family", "family", "architecture family"), ("dataset", "dataset", ""), ("threat", "threat", ""),
             ("clean", "clean %", "clean accuracy (higher is better)"),
             ("robust", "robust %", "robust accuracy: AutoAttack where evaluated, else robcurve PGD (higher is better)")]
    for m in cols:
        meta = _meta(m)
        heads.append((m, short(m), f"{meta.description} [{meta.unit}; {'higher' if meta.direction == 'higher' else 'lower' if meta.direction == 'lower' else 'no'} is better]"))
    th = "".join(f'<th title="{e(tip)}" data-col="{e(k)}">{e(label)}</th>' for k, label, tip in heads)
    body = []
    for _, r in df.iterrows():
        def td(v: Any, text: str | None = None) -> str:
            dv = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
            return f'<td data-v="{e(str(dv))}">{e(text if text is not None else _f(v))}</td>'

        cells = [td(r["rank"]), f'<td data-v="{e(str(r["id"]))}" title="{e(str(r["name"]))}">{e(str(r["id"]))}'
                 + (' <span title="training checkpoint">†</span>' if r["series"] else "") + "</td>",
                 td(r["family"], r["family"]), td(r["dataset"], r["dataset"]), td(r["threat_model"], r["threat_model"]),
                 td(r["clean_acc"], _f(r["clean_acc"], 4)),
                 td(r["robust_acc"], "–" if r["robust_acc"] is None else f"{_f(r['robust_acc'], 4)} ({r['robust_source']})")]
        cells += [td(r.get(m), _cell(r, m)) for m in cols]
        body.append(f'<tr data-dataset="{e(str(r["dataset"]))}" data-threat="{e(str(r["threat_model"]))}" '
                    f'data-family="{e(str(r["family"]))}">{"".join(cells)}</tr>')

    def select(key: str, values: list[str]) -> str:
        opts = "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in values)
        return f'<label>{e(key)} <select class="filter" data-key="{e(key)}"><option value="">all</option>{opts}</select></label>'

    filters = " ".join([select("dataset", sorted(df["dataset"].unique())) if not df.empty else "",
                        select("threat", sorted(df["threat_model"].unique())) if not df.empty else "",
                        select("family", sorted(df["family"].unique())) if not df.empty else ""])
    rel_html = []
    for (ds, thr), rels in rels_by.items():
        rows = "".join(f"<tr><td>{e(r.x)} vs {e(r.y)}</td><td>{r.n}</td><td>{e(_f(r.rho))}</td>"
                       f"<td>{e('–' if r.lo is None else f'[{_f(r.lo)}, {_f(r.hi)}]')}</td><td>{e(_f(r.p))}</td>"
                       f"<td>{e(r.verdict)}</td></tr>" for r in rels)
        rel_html.append(f"<h2>Relations across models: {e(ds)} / {e(thr)}</h2><table class='rel'><thead><tr><th>relation"
                        f"</th><th>n models</th><th>rho</th><th>95% bootstrap interval</th><th>p (permutation)</th>"
                        f"<th>verdict</th></tr></thead><tbody>{rows}</tbody></table>")
        if (ds, thr) in pngs:
            b64 = base64.b64encode(pngs[(ds, thr)]).decode()
            rel_html.append(f'<img alt="curvedness against attack distances and calibration, {e(ds)} {e(thr)}" '
                            f'src="data:image/png;base64,{b64}" style="max-width:100%">')
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>robcurve leaderboard</title>"
            "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 6px}th{cursor:pointer;background:#f3f3f3}"
            "tbody tr:nth-child(even){background:#fafafa}</style></head><body>"
            "<h1>robcurve leaderboard</h1><p>Curvature, attack distance and calibration of vision models "
            "(Kim et al., <i>Curved Representation Space of Vision Transformers</i>, AAAI 2024). Click a column to sort; "
            "hover a header for the metric's description and direction. † = training checkpoint. Intervals are 95%.</p>"
            f"<p>{filters}</p><table id='board'><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"{''.join(rel_html)}<script>{_JS}</script></body></html>\n")


def render_all(entries: list[Entry], out: Path) -> list[Path]:
    """Write README.md, index.html, leaderboard.csv, leaderboard.tex, relations.json and plots into ``out``."""
    import json

    from robcurve.run.store import atomic_write_bytes, atomic_write_text

    df = tidy(entries)
    rels_by: dict[tuple[str, str], list[Relation]] = {}
    pairs_by: dict[tuple[str, str], pd.DataFrame] = {}
    pngs: dict[tuple[str, str], bytes] = {}
    names: dict[tuple[str, str], str] = {}
    written = []
    if not df.empty:
        for key, sub in df.groupby(["dataset", "threat_model"], sort=True):
            rels_by[key] = relations(sub)
            pairs_by[key] = matched_pairs(sub)
            png = scatter_png(sub)
            if png:
                pngs[key] = png
                names[key] = f"relations_{key[0]}_{key[1]}.png"
                atomic_write_bytes(out / names[key], png)
                written.append(out / names[key])
    files = {
        "README.md": markdown(df, rels_by, pairs_by, names) + "\n",
        "index.html": html_page(df, rels_by, pngs),
        "leaderboard.csv": df.to_csv(index=False),
        "leaderboard.tex": latex(df),
        "relations.json": json.dumps({f"{k[0]}/{k[1]}": {"relations": [r.to_dict() for r in v],
                                                          "matched_pairs": json.loads(pairs_by[k].to_json(orient="records")),
                                                          "matched_verdict": matched_verdict(pairs_by[k])}
                                      for k, v in rels_by.items()}, indent=2, allow_nan=False) + "\n",
    }
    for name, text in files.items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    return written
