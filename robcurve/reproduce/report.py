"""The paper-reproduction report: ``report.md``, a self-contained ``report.html``, ``report.json``, figures.

The verdict table holds, per finding, what the paper claims, what robcurve measured (the
difference, its 95% interval, n, censored counts and the scale) and the verdict with its rule.
Figures are drawn from the stored runs only. All text in the HTML page is escaped; figures are
embedded as base64 PNGs, so the page has no outside references.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robcurve.reproduce import stats as S
from robcurve.run.config import RunConfig

PAPER = ("Kim, Park, Kim, Lee: Curved Representation Space of Vision Transformers, AAAI 2024, arXiv:2210.05742 "
         "(claims as stated in its abstract)")
FINDINGS = (
    ("1", "Finding 1: curvature, Transformer vs CNN",
     "While CNNs exhibit a fairly linear relationship between input and output movements, Transformers show a "
     "nonlinear relationship for some data: their output moves along a curved trajectory."),
    ("2", "Finding 2: curvature and the distance to the boundary",
     "Data in a curved region are hard to move out of the decision region (the output moves along a curve instead "
     "of straight to the boundary), resulting in high robustness."),
    ("3", "Finding 3: jump-out",
     "If a sample is slightly modified to jump out of the curved region, the movement afterwards becomes linear and "
     "goes to the decision boundary directly: a boundary exists near the data, hidden by the curvature."),
    ("calibration", "Calibration",
     "Transformers are more robust to corruptions than CNNs while not being overconfident; the curved "
     "representation explains their underconfident predictions."),
    ("attention", "The attention claim",
     "Mathematical properties of the attention operation induce the nonlinear response to linear perturbation."),
    ("evolution", "Training evolution",
     "The paper reports how the curvedness evolves during training (the abstract states no direction)."),
)
EXPECT_SIGN = {"greater": "> 0", "less": "< 0", "change": "≠ 0", "none": "–"}


def fmt(v: Any, digits: int = 4) -> str:
    """A number for the tables: 4 significant digits, inf for censored, – for missing."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isnan(v):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{digits}g}"


def measured_text(r: Mapping[str, Any]) -> str:
    """The measured cell: value [lo, hi] (and the two statistics for a difference)."""
    s = f"{fmt(r['value'])} [{fmt(r['lo'])}, {fmt(r['hi'])}]"
    if r.get("stat_b") is not None:
        s += f" ({fmt(r['stat_a'])} vs {fmt(r['stat_b'])})"
    return s


def n_text(r: Mapping[str, Any]) -> str:
    n = fmt(r.get("n_a"))
    if r.get("n_b") is not None:
        n += f" vs {fmt(r['n_b'])}"
    return n


def censored_text(r: Mapping[str, Any]) -> str:
    a, b = r.get("censored_a"), r.get("censored_b")
    if a is None and b is None:
        return "–"
    return f"{a}" + (f" vs {b}" if b is not None else "")


TABLE_HEAD = ["claim", "comparison", "quantity", "measured: value [95% CI] (A vs B)", "n", "censored", "scale",
              "expected", "verdict"]


def row_cells(r: Mapping[str, Any]) -> list[str]:
    return [r["claim"], r["comparison"], r["quantity"], measured_text(r), n_text(r), censored_text(r), r["scale"],
            EXPECT_SIGN[r["expect"]], r["verdict"]]


def summary_rows(rows: list[Mapping[str, Any]]) -> list[list[str]]:
    """Per finding: the claim, the first (headline) row's measurement and verdict, and the verdict counts."""
    out = []
    for key, title, claim in FINDINGS:
        rs = [r for r in rows if r["finding"] == key and r["expect"] != "none"]
        if not rs:
            out.append([title, claim, "not measured", "–", "–"])
            continue
        h = rs[0]
        counts = {v: sum(r["verdict"] == v for r in rs) for v in (S.SUPPORTED, S.NOT_SUPPORTED, S.INCONCLUSIVE)}
        out.append([title, claim, f"{h['comparison']}: {h['quantity']} = {measured_text(h)}, n {n_text(h)}",
                    h["verdict"], ", ".join(f"{k}: {v}" for k, v in counts.items())])
    return out


# -- figures ---------------------------------------------------------------------------------------
def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _short(m: str) -> str:
    return m.removeprefix("zoo:")


def _label(m: str, family: Mapping[str, str]) -> str:
    return f"{_short(m)} ({family.get(m, '?')})"


def fig_curvature(Q: Mapping[str, Mapping[str, np.ndarray]], models: list[str], family: Mapping[str, str],
                  cfg: RunConfig) -> bytes:
    import matplotlib.pyplot as plt

    from robcurve.plots import plot_curvature_hist
    from robcurve.reproduce.paper import curvature_scale

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, what in ((axes[0], "curv_feat", "penultimate"), (axes[1], "curv_logit", "logits")):
        vals = {_label(m, family): Q[m][key] for m in models if key in Q[m]}
        if vals:
            plot_curvature_hist(vals, ax=ax, threshold=cfg.trajectory.curved_threshold,
                                xlabel=f"{what} curvedness 1 − R² ({curvature_scale(cfg)})")
    fig.tight_layout()
    return _png(fig)


def fig_ladder(Q: Mapping[str, Mapping[str, np.ndarray]], models: list[str], family: Mapping[str, str]) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, space in ((axes[0], "feat"), (axes[1], "logit")):
        for m in models:
            keys = sorted((k for k in Q[m] if k.startswith(f"angle_{space}_h")), key=lambda s: float(s.split("_h")[1]))
            hs = [float(k.split("_h")[1]) for k in keys]
            ys = [float(np.nanmean(Q[m][k])) if np.isfinite(Q[m][k]).any() else np.nan for k in keys]
            ax.plot(hs, ys, "-" if family.get(m) == "transformer" else "--", marker="o", label=_label(m, family))
        ax.set_xscale("log")
        ax.set_xlabel("grid step h (L∞ ε)")
        ax.set_ylabel(f"mean {space} turning angle (deg)")
        ax.grid(alpha=0.3)
        ax.set_title(f"scale ladder: {'penultimate' if space == 'feat' else 'logits'}", fontsize=9)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return _png(fig)


def _hist_censored(ax: Any, groups: dict[str, np.ndarray], xlabel: str) -> None:
    """Histograms of distances; censored (+inf) values drawn as one hatched bar right of the largest finite value."""
    fin = np.concatenate([v[np.isfinite(v)] for v in groups.values()] + [np.zeros(0)])
    if fin.size == 0:
        ax.text(0.5, 0.5, "no finite values", ha="center", transform=ax.transAxes)
        return
    top = float(fin.max()) if fin.size else 1.0
    bins = np.linspace(0, top * 1.02 + 1e-12, 25)
    width = bins[1] - bins[0]
    for i, (lab, v) in enumerate(groups.items()):
        f = v[np.isfinite(v)]
        c = int(np.isinf(v).sum())
        ax.hist(f, bins=bins, histtype="step", lw=1.4, label=f"{lab} (n={v.size}, censored {c})")
        if c:
            ax.bar(top * 1.02 + width * (1.5 + 1.2 * i), c, width=width, hatch="//", fill=False,
                   edgecolor=f"C{i}")
    ax.axvline(top * 1.02 + width * 0.8, color="k", lw=0.6, ls=":")
    ax.text(top * 1.02 + width * 1.0, ax.get_ylim()[1] * 0.92, "censored", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)


def fig_distances(Q: Mapping[str, Mapping[str, np.ndarray]], models: list[str], family: Mapping[str, str]) -> bytes:
    import matplotlib.pyplot as plt

    cols = [("travel", "travel distance ε (L∞, along d)"), ("deepfool_l2", "DeepFool L2"),
            ("pgd_dist", "PGD distance (smallest L∞ budget)")]
    fig, axes = plt.subplots(len(models), 3, figsize=(13, 3.0 * len(models)), squeeze=False)
    for i, m in enumerate(models):
        q = Q[m]
        for j, (key, lab) in enumerate(cols):
            ax = axes[i, j]
            if key not in q or "curved" not in q:
                ax.axis("off")
                continue
            cur = q["curved"] == 1
            st = q["curved"] == 0
            v = q[key]
            _hist_censored(ax, {"curved": v[cur & ~np.isnan(v)], "straight": v[st & ~np.isnan(v)]}, lab)
            if j == 0:
                ax.set_ylabel(_label(m, family))
    fig.tight_layout()
    return _png(fig)


def fig_jumpout(Q: Mapping[str, Mapping[str, np.ndarray]], models: list[str], family: Mapping[str, str]) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), 4, figsize=(16, 3.3 * len(models)), squeeze=False)
    for i, m in enumerate(models):
        q = Q[m]
        for v, mk in (("recompute", "o"), ("keep", "x")):
            p = f"jump_{v}_"
            if p + "curv_before" not in q:
                continue
            cb, ca = q[p + "curv_before"], q[p + "curv_after"]
            axes[i, 0].scatter(cb, ca, s=10, marker=mk, alpha=0.6, label=f"direction {v}")
            tb, ta = q[p + "travel_before"], q[p + "travel_after"]
            axes[i, 1].scatter(tb, ta, s=10, marker=mk, alpha=0.6, label=f"direction {v}")
            ax = axes[i, 2 if v == "recompute" else 3]
            r = q[p + "ratio"]
            for lab, sel in (("curved", q[p + "curved"] == 1), ("straight", q[p + "curved"] == 0)):
                x = r[sel & np.isfinite(r)]
                if x.size:
                    ax.hist(x, bins=20, histtype="step", lw=1.4, label=f"{lab} (n={x.size}, <1: {np.mean(x < 1):.0%})")
            ax.axvline(1.0, color="k", ls="--", lw=0.8)
            ax.set_xlabel(f"shortcut ratio, direction {v}")
            ax.legend(fontsize=7)
        for ax, lab in ((axes[i, 0], "curvedness"), (axes[i, 1], "travel distance ε")):
            lim = ax.get_xlim()[1], ax.get_ylim()[1]
            top = max(lim)
            ax.plot([0, top], [0, top], "k--", lw=0.7)
            ax.set_xlabel(f"{lab} before the jump")
            ax.set_ylabel(f"{lab} after")
            ax.legend(fontsize=7)
        axes[i, 0].set_title(_label(m, family), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def fig_calibration(Q: Mapping[str, Mapping[str, np.ndarray]], models: list[str], family: Mapping[str, str]) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    conds = ["sece_clean", "sece_corr"] + sorted({k for m in models for k in Q[m] if k.startswith("sece_adv_")})
    x = np.arange(len(conds))
    w = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        ys, lo, hi = [], [], []
        for c in conds:
            if c in Q[m]:
                d = S.paired_difference(Q[m][c], None, "mean", 200, 0)
                ys.append(d.value)
                lo.append(d.value - (d.lo if d.lo is not None else d.value))
                hi.append((d.hi if d.hi is not None else d.value) - d.value)
            else:
                ys.append(np.nan)
                lo.append(0)
                hi.append(0)
        axes[0].bar(x + i * w, ys, w, yerr=[lo, hi], label=_label(m, family), capsize=2)
    axes[0].axhline(0, color="k", lw=0.7)
    axes[0].set_xticks(x + w * (len(models) - 1) / 2)
    axes[0].set_xticklabels([c.replace("sece_", "") for c in conds], fontsize=8)
    axes[0].set_ylabel("sECE (> 0: underconfident)")
    axes[0].legend(fontsize=7)
    for m in models:
        if "curv_feat" in Q[m]:
            axes[1].scatter(Q[m]["curv_feat"], Q[m]["conf"], s=8, alpha=0.6, label=_label(m, family))
    axes[1].set_xlabel("penultimate curvedness 1 − R²")
    axes[1].set_ylabel("confidence (max softmax)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def figures(results: Mapping[str, Any], Q: Mapping[str, Mapping[str, np.ndarray]], family: Mapping[str, str],
            tres: Any, cfg: RunConfig) -> dict[str, tuple[str, bytes]]:
    """{file name: (caption, png bytes)} of every report figure."""
    import matplotlib

    matplotlib.use("Agg")
    from robcurve.run.layers import draw_layers, layer_index

    models = list(results)
    out: dict[str, tuple[str, bytes]] = {
        "curvature.png": ("Finding 1: distributions of the headline curvedness, penultimate and logits "
                          "(correct, resolved samples; dashed: the curved threshold).", fig_curvature(Q, models, family, cfg)),
        "ladder.png": ("Finding 1 on the scale ladder: mean turning angle against the grid step h.",
                       fig_ladder(Q, models, family)),
    }
    if any("travel" in Q[m] for m in models):
        out["distances.png"] = ("Finding 2: distance histograms of curved and straight samples; censored distances "
                                "(no flip within the search range) are the hatched bars right of the dotted line.",
                                fig_distances(Q, models, family))
    if any("jump_recompute_curv_before" in Q[m] for m in models):
        out["jumpout.png"] = ("Finding 3: curvedness and travel distance before and after the jump (both variants), "
                              "and the shortcut ratio of curved and straight samples.", fig_jumpout(Q, models, family))
    out["calibration.png"] = ("Calibration: sECE per model clean, corrupted (mean) and under attack (95% bootstrap "
                              "intervals), and confidence against curvedness.", fig_calibration(Q, models, family))
    for m, r in results.items():
        if "layers" in r.frames and layer_index(r.frames["layers"]):
            fig = draw_layers(r.frames["layers"], r.config, title=_label(m, family))
            out[f"layers_{_short(m).replace(':', '-').replace('/', '-')}.png"] = (
                f"The attention claim: layer profile of {_short(m)} (median curvedness per layer, interquartile band).",
                _png(fig))
    if tres is not None:
        from robcurve.reproduce.track import figure

        out["evolution.png"] = ("Training evolution: each statistic against epoch, per training series "
                                "(95% intervals shaded).", _png(figure(tres)))
    return out


# -- documents -----------------------------------------------------------------------------------------
def _md_table(head: list[str], body: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def context_rows(results: Mapping[str, Any], family: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """Per model: the registered metrics behind the findings (values from :func:`robcurve.load_run`)."""
    head = ["model", "family", "clean acc", "curvedness median [CI]", "curved share", "logit curvedness",
            "travel median (censored)", "DeepFool L2 median", "PGD distance median", "shortcut ratio median", "sECE",
            "compute s"]
    body = []
    for m, r in results.items():
        def v(name: str, cond: str | None = None, r: Any = r) -> str:
            return fmt(r.value(name, cond))

        cv = r.row("curvedness_median")
        ci = f"{fmt(cv.value)} [{fmt(cv.lo)}, {fmt(cv.hi)}]" if cv else "–"
        comp = sum((r.entry.get("robcurve", {}).get("compute_s") or {}).values())
        body.append([_short(m), family.get(m, "?"), v("clean_acc"), ci, v("curved_share"), v("logit_curvedness_median"),
                     f"{v('travel_median')} ({v('travel_censored')})", v("deepfool_l2_median"),
                     v("pgd_distance_median"), v("shortcut_ratio_median"), v("sece"), f"{comp:.0f}"])
    return head, body


def markdown(rows: list[dict[str, Any]], meta: Mapping[str, Any], results: Mapping[str, Any],
             family: Mapping[str, str], figs: Mapping[str, tuple[str, bytes]], cfg: RunConfig) -> str:
    from robcurve.reproduce.paper import curvature_scale

    mode = meta["mode"]
    lines = [f"# Reproducing *Curved Representation Space of Vision Transformers* with robcurve ({mode} mode)", ""]
    if mode == "quick":
        lines += [f"> **Quick mode**: n = {meta['n']} samples per model (layer profile: {meta['layer_samples']}), "
                  "fewer corruptions and attack budgets, the training series at two checkpoints each. At this n most "
                  "intervals are wide: read the verdicts as a smoke test of the pipeline, not as evidence. "
                  "The full report: `robcurve reproduce` (see the README section on reproducing the paper).", ""]
    lines += [f"- paper: {PAPER}",
              f"- models: {', '.join(_label(m, family) for m in results)}; dataset {meta['dataset']}; n = {meta['n']} "
              f"seeded samples per model (the same images for every model; seed {meta['seed']})",
              f"- curvature scale: {curvature_scale(cfg)}, T={cfg.trajectory.T}; curved when 1 − R² > "
              f"{cfg.trajectory.curved_threshold:g}; curvature and distances use correctly classified samples whose "
              "in-class region is resolved, calibration every sample",
              f"- config digest `{meta['config_digest']}`; bootstrap {meta['bootstrap']} resamples; wall time "
              f"{meta['elapsed_s']:.0f} s for this invocation (resumed work not counted; compute s per model below)",
              f"- training series: {', '.join(meta['series']) or 'none'}",
              f"- regenerate (resumes the stored runs): `{meta.get('command', 'robcurve reproduce')}`", "",
              "## Verdict rules", "",
              "Each row compares two statistics over per-sample values of the same images (A − B), or one statistic "
              "(A). Intervals: 95% percentile bootstrap over sample ids (pairs kept); Spearman intervals: percentile "
              "bootstrap over samples; across models: bootstrap over models.", ""]
    for k in ("greater", "less", "change"):
        lines.append(f"- expected {EXPECT_SIGN[k]}: {S.RULES[k]}")
    lines += ["- rows marked *context* have no claim and no verdict", "", "## Summary", "",
              _md_table(["finding", "paper claims", "headline measurement [95% CI]", "headline verdict",
                         "verdicts over the finding's rows"], summary_rows(rows)), ""]
    for key, title, claim in FINDINGS:
        rs = [r for r in rows if r["finding"] == key]
        lines += [f"## {title}", "", f"Paper: {claim}", ""]
        if not rs:
            lines += ["Not measured in this report (needs both families, the measurement, or a training series).", ""]
            continue
        lines += [_md_table(TABLE_HEAD, [row_cells(r) for r in rs]), ""]
        for name, (cap, _) in figs.items():
            if _fig_finding(name) == key:
                lines += [f"![{cap}](figures/{name})", "", f"*{cap}*", ""]
    head, body = context_rows(results, family)
    lines += ["## Per-model metrics (registered metrics, `robcurve.load_run`)", "", _md_table(head, body), "",
              "## Run time", "",
              "Compute seconds stored with the runs (summed over resumed sessions; measurements only, without "
              f"model loading and summaries); this invocation took {meta['elapsed_s']:.0f} s of wall time.", "",
              _md_table(["work", "compute s"], [[k, fmt(float(v))] for k, v in (meta.get("compute_s") or {}).items()]),
              "",
              "Every number of the verdict tables is in report.json with its recipe (models, per-sample quantity, "
              "samples, statistic, bootstrap seed); `robcurve.reproduce.paper.evaluate` recomputes it.", ""]
    return "\n".join(lines)


def _fig_finding(name: str) -> str:
    if name in ("curvature.png", "ladder.png"):
        return "1"
    if name == "distances.png":
        return "2"
    if name == "jumpout.png":
        return "3"
    if name == "calibration.png":
        return "calibration"
    if name.startswith("layers_"):
        return "attention"
    if name == "evolution.png":
        return "evolution"
    return ""


def html_page(md_rows: list[dict[str, Any]], meta: Mapping[str, Any], results: Mapping[str, Any],
              family: Mapping[str, str], figs: Mapping[str, tuple[str, bytes]], cfg: RunConfig) -> str:
    """The report as one self-contained HTML page (every text escaped, figures inline)."""
    from robcurve.reproduce.paper import curvature_scale

    e = html.escape

    def table(head: list[str], body: list[list[str]], verdict_col: int | None = None) -> str:
        h = "".join(f"<th>{e(x)}</th>" for x in head)
        trs = []
        for row in body:
            tds = []
            for i, c in enumerate(row):
                cls = ""
                if i == verdict_col:
                    cls = {S.SUPPORTED: "sup", S.NOT_SUPPORTED: "nsup", S.INCONCLUSIVE: "inc"}.get(c, "")
                tds.append(f'<td class="{cls}">{e(str(c))}</td>' if cls else f"<td>{e(str(c))}</td>")
            trs.append("<tr>" + "".join(tds) + "</tr>")
        return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(trs)}</tbody></table>"

    def img(name: str) -> str:
        cap, png = figs[name]
        return (f'<figure><img alt="{e(cap)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                f"<figcaption>{e(cap)}</figcaption></figure>")

    mode = meta["mode"]
    parts = [f"<h1>{e('Reproducing Curved Representation Space of Vision Transformers with robcurve')} "
             f"({e(mode)} mode)</h1>"]
    if mode == "quick":
        warn = (f"Quick mode: n = {meta['n']} samples per model (layer profile: {meta['layer_samples']}); read the "
                "verdicts as a smoke test of the pipeline, not as evidence. Full report: robcurve reproduce.")
        parts.append(f"<p class='warn'>{e(warn)}</p>")
    parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in (
        f"paper: {PAPER}",
        f"models: {', '.join(_label(m, family) for m in results)}; dataset {meta['dataset']}; n = {meta['n']} per model",
        f"curvature scale: {curvature_scale(cfg)}, T={cfg.trajectory.T}; curved when 1 − R² > "
        f"{cfg.trajectory.curved_threshold:g}",
        f"config digest {meta['config_digest']}; bootstrap {meta['bootstrap']}; wall time {meta['elapsed_s']:.0f} s",
    )) + "</ul>")
    parts.append("<h2>Verdict rules</h2><ul>" + "".join(f"<li>{e('expected ' + EXPECT_SIGN[k] + ': ' + S.RULES[k])}</li>"
                                                         for k in ("greater", "less", "change")) + "</ul>")
    parts.append("<h2>Summary</h2>" + table(["finding", "paper claims", "headline measurement [95% CI]",
                                             "headline verdict", "verdicts over the finding's rows"],
                                            summary_rows(md_rows), verdict_col=3))
    for key, title, claim in FINDINGS:
        rs = [r for r in md_rows if r["finding"] == key]
        parts.append(f"<h2>{e(title)}</h2><p>{e('Paper: ' + claim)}</p>")
        if not rs:
            parts.append(f"<p>{e('Not measured in this report.')}</p>")
            continue
        parts.append(table(TABLE_HEAD, [row_cells(r) for r in rs], verdict_col=len(TABLE_HEAD) - 1))
        parts += [img(n) for n in figs if _fig_finding(n) == key]
    head, body = context_rows(results, family)
    parts.append("<h2>Per-model metrics</h2>" + table(head, body))
    style = ("body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}"
             "th{background:#f3f3f3}.sup{background:#d9f2d9}.nsup{background:#f7d4d4}.inc{background:#f4f0d0}"
             "img{max-width:100%}figcaption{font-size:12px;color:#444}.warn{background:#fff3cd;padding:.6em}")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>robcurve: paper reproduction</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(out: Path, rows: list[dict[str, Any]], results: Mapping[str, Any], keeps: Mapping[str, Any],
                 tres: Any, cfg: RunConfig, meta: Mapping[str, Any], family: Mapping[str, str]) -> str:
    """Write report.md, report.html, report.json and figures/ into ``out``; return the Markdown summary table."""
    from robcurve.reproduce.paper import quantities
    from robcurve.run.store import atomic_write_bytes, atomic_write_text

    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    Q = {m: quantities(r.frames, r.config, None if keeps.get(m) is None else keeps[m].frames)
         for m, r in results.items()}
    figs = figures(results, Q, family, tres, cfg)
    for name, (_, png) in figs.items():
        atomic_write_bytes(out / "figures" / name, png)
    atomic_write_text(out / "report.md", markdown(rows, meta, results, family, figs, cfg))
    atomic_write_text(out / "report.html", html_page(rows, meta, results, family, figs, cfg))
    doc = {"meta": dict(meta), "paper": PAPER, "rules": S.RULES,
           "findings": [{"key": k, "title": t, "claim": c} for k, t, c in FINDINGS],
           "families": {m: family.get(m, "") for m in results}, "rows": rows}
    atomic_write_text(out / "report.json", json.dumps(doc, indent=1, allow_nan=False, default=_json_default) + "\n")
    return _md_table(["finding", "paper claims", "headline measurement [95% CI]", "headline verdict",
                      "verdicts over the finding's rows"], summary_rows(rows))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
