"""The paper report from shipped per-sample files (METHOD.md §2, §4, §6–8; issue 24).

One run set: the models are the entries of one leaderboard folder measured under its protocol
(the population board by default: every model with the same config, the same n samples, the
boundary-relative headline, the adaptive jump-out with its controls and the attention / gate
ablation), and the training series are ``robcurve track`` runs measured with the same
protocol's window measurement. Every input is a per-sample file (``*.samples.jsonl.gz``, the
leaderboard's format) named with its sha256 in ``inputs.json``, so
``robcurve reproduce --from-files DIR`` rebuilds ``report.md`` / ``report.json`` /
``report.html`` byte for byte without any model.

Units of inference (stated in the report): claims about models (findings 1, 3, calibration,
attention, the across-model relations) use *models* as the unit: exact permutation tests over
family labels, exact permutation Spearman across models, exact sign tests over models. Rows
"within a model" take the model's weights as fixed and the images as the unit; they are shown
per model as context and enter the verdicts only through a sign test over models. The
training trend uses checkpoints of one series as the unit (the same images at every checkpoint).
Every verdict row's p is Holm-adjusted over all verdict rows of the report (statsmodels
``multipletests``), raw and adjusted side by side.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robcurve import acrossmodels as A
from robcurve.errors import RobcurveError
from robcurve.leaderboard.io import SAMPLES_SUFFIX, load_entries, read_samples
from robcurve.leaderboard.render import (
    CURVATURE,
    full_test_accuracy,
    mixed_relations,
    relations,
    tidy,
)
from robcurve.run.summary import RowSource, frames

MANIFEST = "inputs.json"
FORMAT = 2  # inputs.json / report.json format (1: the report made from gitignored run folders)
PAPER = ("Kim, Park, Kim, Lee: Curved Representation Space of Vision Transformers, AAAI 2024, "
         "arXiv:2210.05742 (claims as stated in its abstract)")
ALPHA = A.ALPHA
TRANSFORMER, CNN, MLP = "transformer", "cnn", "mlp"


# -- inputs ------------------------------------------------------------------------------------------
def sha256_file(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _rel(p: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(p).resolve(), Path(base).resolve())).as_posix()


def write_manifest(report_dir: str | Path, board: str | Path, dataset: str, threat: str,
                   track: list[dict[str, Any]], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs.json``: the board's verified entries (entry and per-sample file sha256) and the track files.

    ``track``: dicts with series, family, epoch, model and ``file`` (a per-sample file under the
    report folder). Paths are relative to the report folder.
    """
    rdir = Path(report_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    entries = [e for e in load_entries(board, dataset, threat)
               if e.robcurve is not None and e.status() == "verified" and not e.robcurve.series and not e.robcurve.flags]
    if not entries:
        raise RobcurveError(f"no verified entries in {board} for {dataset}/{threat}", where=str(board),
                            fix="measure and submit models to the board first (scripts/population.py)")
    folder = Path(board) / dataset / threat
    ents = []
    for e in sorted(entries, key=lambda e: e.id):
        ep, sp = folder / f"{e.id}.json", folder / f"{e.id}{SAMPLES_SUFFIX}"
        ents.append({"id": e.id, "entry": _rel(ep, rdir), "entry_sha256": sha256_file(ep),
                     "samples": _rel(sp, rdir), "samples_sha256": sha256_file(sp)})
    tr = [{**t, "file": _rel(Path(t["file"]), rdir), "sha256": sha256_file(Path(t["file"]))} for t in track]
    man = {"format": FORMAT, "board": _rel(Path(board), rdir), "dataset": dataset, "threat": threat,
           "entries": ents, "track": tr, "settings": dict(settings)}
    (rdir / MANIFEST).write_text(json.dumps(man, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return man


@dataclass
class Study:
    """The loaded inputs: the board table, per-sample frames per model, the track checkpoints."""

    manifest: dict[str, Any]
    board: Path
    df: pd.DataFrame
    entries: list[Any]
    frames: dict[str, dict[str, pd.DataFrame]]
    track: list[dict[str, Any]] = field(default_factory=list)  # series, family, epoch, frames


def load_study(report_dir: str | Path) -> Study:
    """Read ``inputs.json`` and every file it names, checking each file's sha256 first."""
    rdir = Path(report_dir)
    mp = rdir / MANIFEST
    if not mp.is_file():
        raise RobcurveError(f"{rdir} holds no {MANIFEST} (the list of the report's input files)", where=str(rdir),
                            fix="make the report once with robcurve reproduce --report DIR")
    try:
        man = json.loads(mp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RobcurveError(f"{mp} is not valid JSON ({err})", where=str(mp), fix="regenerate it with robcurve "
                            "reproduce") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise RobcurveError(f"{mp} is not a format-{FORMAT} input list", where=str(mp),
                            fix="regenerate the report with robcurve reproduce --report DIR")

    def checked(rel: str, digest: str) -> Path:
        p = (rdir / rel)
        if not p.is_file():
            raise RobcurveError(f"an input of the report is missing: {p}", where=str(mp),
                                fix="restore it from version control, or regenerate the report")
        if sha256_file(p) != digest:
            raise RobcurveError(f"an input of the report changed since it was made: {p} (sha256 differs)",
                                where=str(mp), fix="restore the file, or regenerate the report with robcurve reproduce")
        return p

    board = (rdir / man["board"])
    ids = {e["id"] for e in man["entries"]}
    for e in man["entries"]:
        checked(e["entry"], e["entry_sha256"])
    entries = [e for e in load_entries(board, man["dataset"], man["threat"]) if e.id in ids]
    if {e.id for e in entries} != ids:
        raise RobcurveError(f"the board {board} lacks entries the report used: {sorted(ids - {e.id for e in entries})}",
                            where=str(mp), fix="restore the board from version control")
    fr = {}
    for e in man["entries"]:
        p = checked(e["samples"], e["samples_sha256"])
        rows, meta = read_samples(p)
        fr[e["id"]] = frames(RowSource(rows, meta, str(p)))
    track = []
    for t in man["track"]:
        p = checked(t["file"], t["sha256"])
        rows, meta = read_samples(p)
        track.append({**t, "frames": frames(RowSource(rows, meta, str(p)))})
    return Study(man, board, tidy(entries), entries, fr, track)


# -- per-sample helpers -------------------------------------------------------------------------------
def _col(df: pd.DataFrame | None, c: str, dtype: Any = float) -> np.ndarray:
    if df is None or c not in df:
        return np.zeros(0 if df is None else len(df), dtype=dtype) if dtype is bool else np.full(
            0 if df is None else len(df), np.nan)
    if dtype is bool:
        return df[c].fillna(False).to_numpy(bool)
    return pd.to_numeric(df[c], errors="coerce").to_numpy(float)


#: per-model statistics the board's entries already hold (verified against the same per-sample files): read there
BOARD = {"w_rho_travel": "spearman_bw_curvedness_travel", "w_ratio_minus_null": "ajo_ratio_minus_null_median",
         "w_attention_ratio": "ablation_attention_ratio_median", "w_gates_ratio": "ablation_gates_ratio_median"}


def _within(fr: Mapping[str, pd.DataFrame]) -> dict[str, float]:
    """Per-model within-model statistics the board's metrics do not give (images as the unit, weights fixed)."""
    out: dict[str, float] = {}
    w = fr.get("window")
    if w is not None:
        c = _col(w, "feat_side")
        allm = np.isfinite(c)
        under = _col(w, "correct", bool).astype(float) - _col(w, "conf")
        out["partial_underconf_margin"] = (A.partial_spearman(c[allm], under[allm], _col(w, "margin")[allm],
                                                              with_p=False)[0] if allm.sum() >= 4 else math.nan)
    j = fr.get("jumpout_adaptive")
    if j is not None:
        meas = _col(j, "measured", bool) & _col(j, "correct", bool)
        curved, jumped = _col(j, "curved", bool), _col(j, "jumped", bool)
        ratio = _col(j, "ratio")
        cj = meas & curved & jumped
        st = meas & ~curved & jumped & np.isfinite(ratio)
        out["n_curved"] = int((meas & curved).sum())
        out["n_jumped"] = int(cj.sum())
        out["n_not_jumped"] = int((meas & curved & ~jumped).sum())
        out["ratio_curved"] = float(np.median(ratio[cj & np.isfinite(ratio)])) if (cj & np.isfinite(ratio)).any() else math.nan
        out["ratio_straight"] = float(np.median(ratio[st])) if st.any() else math.nan
    a = fr.get("ablation")
    if a is not None:
        meas = _col(a, "measured", bool) & _col(a, "correct", bool)
        v, side = _col(a, "gates_side"), _col(a, "side")
        m = meas & np.isfinite(v) & np.isfinite(side) & (side > 0)  # the samples of the board's gates ratio
        out["gates_max_abs"] = float(np.max(np.abs(v[m]))) if m.any() else math.nan
    return out


# -- rows ----------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One verdict (or context) row."""

    id: str
    finding: str
    claim: str
    test: str
    unit: str
    value: float
    n: str
    expect: str  # ">0", "<0", "!=0" or "none" (context: no verdict, not in the multiplicity correction)
    p: float = math.nan
    p_min: float = math.nan
    power: str = ""
    p_holm: float = math.nan
    verdict: str = ""
    detail: str = ""


def sign_test(values: np.ndarray) -> tuple[int, int, float, float]:
    """Exact two-sided sign test of the values against 0 (zeros dropped): (positive, n, p, smallest p)."""
    from scipy.stats import binomtest

    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v != 0)]
    n, k = len(v), int((v > 0).sum())
    if n == 0:
        return 0, 0, math.nan, 1.0
    return k, n, float(binomtest(k, n, 0.5).pvalue), float(binomtest(n, n, 0.5).pvalue)


def _sign_row(rid: str, finding: str, claim: str, test: str, values: Any, expect: str, what: str) -> Row:
    """Median over models of a per-model statistic, tested with the exact sign test over models."""
    v = np.asarray(values, float)
    k, n, p, pmin = sign_test(v)
    med = float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else math.nan
    return Row(rid, finding, claim, f"sign test over models of {test}", "models", med,
               f"{k} of {n} models {what}", expect, p, pmin, "",
               detail="value: the median over models of the per-model statistic; exact binomial sign test")


def _verdicts(rows: list[Row]) -> None:
    tested = [r for r in rows if r.expect != "none" and math.isfinite(r.p) and not (r.p_min > ALPHA)]
    adj = A.adjust([r.p for r in tested], "holm")
    for r, pa in zip(tested, adj, strict=True):
        r.p_holm = pa
    for r in rows:
        if r.expect == "none":
            r.verdict = "context (no claim)"
        elif not math.isfinite(r.p):
            r.verdict = "untestable (not measured or undefined)"
        elif r.p_min > ALPHA:
            r.verdict = f"untestable at this n (smallest achievable p {r.p_min:.3g} > {ALPHA:g})"
        else:
            want = {">0": r.value > 0, "<0": r.value < 0, "!=0": r.value != 0}[r.expect]
            if r.p_holm < ALPHA:
                r.verdict = "supported" if want else "contradicted (significant, opposite sign)"
            else:
                r.verdict = "no evidence at this n" + (f" ({r.power})" if r.power else "")


def _fam(df: pd.DataFrame) -> np.ndarray:
    return df["family"].to_numpy()


def _contrast_row(rid: str, finding: str, claim: str, df: pd.DataFrame, col: str | np.ndarray, a: str, b: str,
                  expect: str, what: str) -> Row:
    v = df[col].to_numpy(float) if isinstance(col, str) else np.asarray(col, float)
    ok = np.isfinite(v)
    c = A.family_contrast(v[ok], _fam(df)[ok], a, b)
    return Row(rid, finding, claim, f"{a} − {b}: difference of the family medians of {what}", "models",
               c["diff"], f"{c['n_a']} vs {c['n_b']} models", expect, c["p"], math.nan, "", detail=c["method"])


def analyse(st: Study) -> tuple[list[Row], dict[str, Any]]:
    """Every verdict and context row of the report, and the context tables."""
    df = st.df.reset_index(drop=True)
    W = {i: _within(st.frames[i]) for i in df["id"]}
    for k in sorted(set().union(*W.values())):
        df[f"w_{k}"] = [W[i].get(k, math.nan) for i in df["id"]]
    for w_col, board_col in BOARD.items():
        df[w_col] = pd.to_numeric(df[board_col], errors="coerce") if board_col in df else math.nan
    acc, acc_src = full_test_accuracy(df)
    df["acc_full"] = acc
    rows: list[Row] = []
    cfg0 = (st.entries[0].robcurve.config or {}) if st.entries else {}
    win = dict(cfg0.get("window") or (cfg0.get("options") or {}).get("window") or {})
    ctx: dict[str, Any] = {"accuracy_source": acc_src, "window": win}

    # finding 1 -------------------------------------------------------------------------------------
    c1 = "Transformers respond nonlinearly (curved trajectories), CNNs fairly linearly"
    rows.append(_contrast_row("f1.curvedness.transformer-cnn", "1", c1, df, CURVATURE, TRANSFORMER, CNN, ">0",
                              "each model's median boundary-relative curvedness"))
    rows.append(_contrast_row("f1.curvedness.transformer-mlp", "1", "the curvature is due to attention, not to "
                              "being a non-CNN (Mixer as the control family)", df, CURVATURE, TRANSFORMER, MLP, ">0",
                              "each model's median boundary-relative curvedness"))
    rows.append(_contrast_row("f1.curvedness.mlp-cnn", "1", "context: Mixer vs CNN", df, CURVATURE, MLP, CNN, "none",
                              "each model's median boundary-relative curvedness"))

    # finding 2 -------------------------------------------------------------------------------------
    rels = {r.y: r for r in relations(df)}
    c2 = "more curved models are harder to move out of their class (more robust)"
    labels = {"travel_median": "median travel distance (L∞ ε to the first label flip along d)",
              "deepfool_l2_median": "median DeepFool L2", "pgd_distance_median": "median PGD distance (smallest "
              "successful L∞ budget)", "pgd_robust_acc": "PGD robust accuracy", "sece": "signed calibration error",
              "ece": "ECE"}
    for y, expect, finding, claim in (("travel_median", ">0", "2", c2), ("deepfool_l2_median", ">0", "2", c2),
                                      ("pgd_distance_median", ">0", "2", c2), ("pgd_robust_acc", ">0", "2", c2),
                                      ("sece", ">0", "calibration", "more curved models are less overconfident "
                                       "(higher sECE)"), ("ece", "none", "calibration", "context")):
        r = rels.get(y)
        if r is None:
            continue
        rows.append(Row(f"across.{y}", finding, claim, f"Spearman(median curvedness, {labels[y]}) across models",
                        "models", r.rho, f"{r.n} models", expect, math.nan if r.p is None else r.p,
                        math.nan if r.p_min is None else r.p_min,
                        f"at n = {r.n} only |rho| ≥ {r.rho_critical:.2f} is significant" if r.rho_critical else "",
                        detail=f"{r.method}; partial rho given accuracy {r.partial_rho:+.3f} (p {r.partial_p:.3g})"
                        if r.partial_rho is not None and math.isfinite(r.partial_rho) else r.method))
    rows.append(_sign_row("f2.within.sign", "2", "within a model, curved samples are farther from the boundary",
                          "the within-model Spearman(curvedness, travel distance)", df["w_rho_travel"], ">0",
                          "positive"))
    mixed = mixed_relations(st.entries, st.board)
    ctx["mixed"] = mixed
    for mr, (rid, expect) in zip(mixed, (("f2.mixed.travel", ">0"), ("f2.mixed.deepfool", "none")), strict=False):
        if "coef" not in mr:
            continue
        rows.append(Row(rid, "2", c2 if expect != "none" else "context", f"mixed model {mr['formula']}: coefficient "
                        f"of per-sample curvedness on {mr['y']}", "images nested in models (random intercept)",
                        mr["coef"], f"{mr['n_samples']} samples, {mr['n_models']} models", expect, mr["p"], math.nan,
                        "", detail=f"95% CI [{mr['lo']:+.3f}, {mr['hi']:+.3f}], {mr['unit']}"))

    # finding 3 -------------------------------------------------------------------------------------
    c3 = "after a jump out of the curved region the boundary turns out near (shortcut ratio below its controls)"
    rows.append(_sign_row("f3.vs_null.sign", "3", c3, "the median per-sample shortcut ratio minus the ratio after "
                          "a null jump of the same size that does not straighten", df["w_ratio_minus_null"], "<0",
                          "above the null"))
    rows.append(_sign_row("f3.vs_straight.sign", "3", c3, "the median shortcut ratio of curved samples that jumped "
                          "out minus that of straight samples (same procedure, the first η)",
                          df["w_ratio_curved"].to_numpy(float) - df["w_ratio_straight"].to_numpy(float), "<0",
                          "above the straight control"))
    rows.append(_contrast_row("f3.vs_null.transformer-cnn", "3", "the near hidden boundary is a Transformer "
                              "property", df, "w_ratio_minus_null", TRANSFORMER, CNN, "<0",
                              "each model's median (shortcut ratio − null ratio)"))

    # calibration ------------------------------------------------------------------------------------
    cc = "Transformers are underconfident (positive sECE) beyond what their accuracy explains"
    sub = df[np.isfinite(df["sece"].to_numpy(float)) & np.isfinite(df["acc_full"].to_numpy(float))]
    X = np.column_stack([np.ones(len(sub)), sub["acc_full"].to_numpy(float)])
    beta = np.linalg.lstsq(X, sub["sece"].to_numpy(float), rcond=None)[0]
    resid = np.full(len(df), np.nan)
    resid[sub.index.to_numpy()] = sub["sece"].to_numpy(float) - X @ beta
    df["sece_resid_acc"] = resid
    rows.append(_contrast_row("cal.sece_given_acc.transformer-cnn", "calibration", cc, df, "sece_resid_acc",
                              TRANSFORMER, CNN, ">0", f"sECE residual after a linear fit on clean accuracy "
                              f"({acc_src})"))
    rows.append(_contrast_row("cal.sece.transformer-cnn", "calibration", "context: the same without the accuracy "
                              "adjustment", df, "sece", TRANSFORMER, CNN, "none", "sECE"))
    rows.append(_sign_row("cal.within.sign", "calibration", "within a model, curved samples get underconfident "
                          "predictions beyond their margin", "the within-model partial Spearman(curvedness, correct − "
                          "confidence | logit margin) over all samples (misclassified ones in their predicted class's "
                          "region)", df["w_partial_underconf_margin"], ">0", "positive"))

    # attention (METHOD §8) ---------------------------------------------------------------------------
    tdf = df[df["family"] == TRANSFORMER]
    rows.append(_sign_row("att.frozen.sign", "attention", "attention causes the curvature: freezing the attention "
                          "maps at ε = 0 removes it", "1 − the median per-sample ratio curvedness(attention frozen) / "
                          "curvedness, Transformer models", 1 - tdf["w_attention_ratio"].to_numpy(float), ">0",
                          "reduced"))
    rows.append(_sign_row("att.vs_gates.sign", "attention", "attention, more than the MLP's gates, causes it",
                          "ratio(gates frozen) − ratio(attention frozen), Transformer models",
                          tdf["w_gates_ratio"].to_numpy(float) - tdf["w_attention_ratio"].to_numpy(float), ">0",
                          "positive"))
    res = df["architecture"].astype(str).str.contains("resnet", case=False).to_numpy()
    ctx["control_gates"] = ({"models": int(res.sum()), "max_frozen_curvedness":
                             float(np.nanmax(df.loc[res, "w_gates_max_abs"].to_numpy(float))),
                             "median_ratio": float(np.nanmedian(df.loc[res, "w_gates_ratio"].to_numpy(float)))}
                            if res.any() else {})

    # evolution (METHOD §7) ---------------------------------------------------------------------------
    evo = evolution(st.track)
    ctx["evolution"] = evo
    for s in evo:
        t = A.spearman_test(np.asarray(s["epochs"], float), np.asarray(s["medians"], float))
        rows.append(Row(f"evo.{s['series']}", "evolution", "curvedness changes during training (the abstract states "
                        "no direction)", f"{s['series']} ({s['family']}): Spearman(epoch, median curvedness of the "
                        "same samples) over the checkpoints from epoch 1", "checkpoints (images fixed)", t.rho,
                        f"{len(s['epochs'])} checkpoints, {s['n_samples']} samples", "!=0", t.p, t.p_min,
                        f"at {t.n} checkpoints only |rho| ≥ {t.rho_critical:.2f} is significant", detail=t.method))
    order = {"1": 0, "2": 1, "3": 2, "calibration": 3, "attention": 4, "evolution": 5}
    rows.sort(key=lambda r: order.get(r.finding, 9))  # stable: the order within a finding is kept
    _verdicts(rows)
    ctx["models"] = df
    return rows, ctx


def evolution(track: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per series: the median boundary-side curvedness per checkpoint (epoch >= 1) over the samples that are
    correctly classified at the first and the last of those checkpoints."""
    out = []
    series: dict[str, list[dict[str, Any]]] = {}
    for t in track:
        if int(t["epoch"]) >= 1 and "window" in t["frames"]:
            series.setdefault(t["series"], []).append(t)
    for s, cks in series.items():
        cks = sorted(cks, key=lambda t: int(t["epoch"]))
        first, last = cks[0]["frames"]["window"], cks[-1]["frames"]["window"]
        keep = first.index[_col(first, "correct", bool)].intersection(last.index[_col(last, "correct", bool)])
        med = []
        for t in cks:
            w = t["frames"]["window"].reindex(keep)
            v = _col(w, "feat_side")
            med.append(float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else math.nan)
        out.append({"series": s, "family": cks[0].get("family", ""), "epochs": [int(t["epoch"]) for t in cks],
                    "medians": med, "n_samples": int(len(keep))})
    return out


# -- writing ------------------------------------------------------------------------------------------
def _g(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, int | np.integer):
        return str(int(v))
    return f"{float(v):.{digits}g}"


def _p(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    if v < 1e-16:  # below double precision next to 1: the fit reports 0
        return "< 1e-16"
    return f"{v:.2g}" if v >= 1e-3 else f"{v:.1e}"


def _num(v: Any) -> Any:
    """JSON-safe and rounded (8 significant digits), so the file does not depend on the last float bits."""
    if isinstance(v, float | np.floating):
        f = float(v)
        return None if not math.isfinite(f) else float(f"{f:.8g}")
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, dict):
        return {k: _num(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_num(x) for x in v]
    return v


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


MODEL_COLS = (("id", "model"), ("family", "family"), ("acc_full", "clean acc (full split)"),
              ("headline_curvedness", "median curvedness"), ("travel_median", "travel ε"),
              ("deepfool_l2_median", "DeepFool L2"), ("pgd_distance_median", "PGD distance"), ("sece", "sECE"),
              ("w_rho_travel", "ρ(curv, travel) within"), ("w_partial_underconf_margin", "partial ρ(curv, under | margin)"),
              ("w_n_curved", "curved (jump set)"), ("w_n_jumped", "jumped out"), ("w_n_not_jumped", "could not"),
              ("w_ratio_curved", "shortcut ratio"), ("w_ratio_minus_null", "ratio − null"),
              ("w_ratio_straight", "straight ratio"), ("w_attention_ratio", "attention-frozen ratio"),
              ("w_gates_ratio", "gates-frozen ratio"))


def render_markdown(rows: list[Row], ctx: Mapping[str, Any], man: Mapping[str, Any]) -> str:
    df: pd.DataFrame = ctx["models"]
    fams = df["family"].value_counts().sort_index()
    n_per = sorted({int(x) for x in pd.to_numeric(df["n"], errors="coerce").dropna()})
    set_ = man.get("settings", {})
    L = ["# Reproducing *Curved Representation Space of Vision Transformers* with robcurve", "",
         f"- paper: {PAPER}",
         f"- run set: the {len(df)} verified entries of `{man['board']}` ({man['dataset']}/{man['threat']}; "
         + ", ".join(f"{v} {k}" for k, v in fams.items()) + f"), all measured under the board's protocol "
         f"(`{set_.get('protocol', '')}`, digest `{set_.get('protocol_digest', '')}`) on the same "
         f"{'/'.join(map(str, n_per))} seeded test images; training series: " +
         (", ".join(f"{s['series']} ({len(s['epochs'])} checkpoints)" for s in ctx["evolution"]) or "none") +
         f", measured with the same protocol's window measurement (n = {set_.get('track_n', '—')})",
         "- inputs: every per-sample file with its sha256 in `inputs.json`; `robcurve reproduce --from-files "
         "<this folder>` rebuilds this report byte for byte without any model",
         f"- curvature: 1 − R² of the penultimate response on the per-sample boundary-relative window "
         f"[0, {ctx['window'].get('fraction', 1):g}·t] of each sample's travel distance t, "
         f"{ctx['window'].get('points', '—')} points; curved when 1 − R² > {ctx['window'].get('curved_threshold', '—')} "
         "(METHOD.md §2)",
         "- **unit of inference**: claims about models use *models* as the unit (exact permutation tests over family "
         "labels, exact permutation Spearman across models, exact sign tests over models); within-model statistics "
         "take the weights as fixed and the images as the unit and enter the verdicts through sign tests over models; "
         "the training trend uses the checkpoints of one series (same images) as the unit; the mixed model has images "
         "nested in models (random intercept per model)",
         f"- **multiplicity**: Holm over the {sum(1 for r in rows if math.isfinite(r.p_holm))} verdict rows "
         "(statsmodels `multipletests`), raw and adjusted p side by side; α = 0.05", "",
         "## Verdict rules", "",
         "- *supported*: Holm-adjusted p < 0.05 and the effect has the expected sign; *contradicted*: Holm-adjusted "
         "p < 0.05 with the opposite sign; *no evidence at this n*: adjusted p ≥ 0.05 (the power line says what "
         "would have been detectable); *untestable at this n*: even the most extreme ordering of these data could not "
         "reach p < 0.05 (ties, too few models); *context*: no claim, not corrected", "",
         "## Verdicts", "",
         "| finding | claim | test | unit | value | n | p | p (Holm) | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.expect == "none":
            continue
        L.append(f"| {r.finding} | {_cell(r.claim)} | {_cell(r.test)} (expected {r.expect}) | {r.unit} | "
                 f"{_g(r.value)} | {_cell(r.n)} | {_p(r.p)} | {_p(r.p_holm)} | {_cell(r.verdict)} |")
    L += ["", "Details of the verdict rows (method, partial correlations, intervals):", ""]
    for r in rows:
        if r.expect != "none" and r.detail:
            L.append(f"- `{r.id}`: {r.detail}" + (f"; {r.power}" if r.power else ""))
    L += ["", "## Context rows (no claim, not corrected)", "",
          "| finding | comparison | unit | value | n | p | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.expect == "none":
            L.append(f"| {r.finding} | {_cell(r.test)} | {r.unit} | {_g(r.value)} | {_cell(r.n)} | {_p(r.p)} | "
                     f"{_cell(r.detail)} |")
    L += ["", "## The models", "",
          "Per model (within-model columns: images as the unit, the first samples of the jump-out and ablation "
          "subsets; see the protocol).", "",
          "| " + " | ".join(_cell(h) for _, h in MODEL_COLS) + " |", "|" + "---|" * len(MODEL_COLS)]
    for _, rec in df.sort_values(["family", "id"]).iterrows():
        L.append("| " + " | ".join(_cell(rec[c]) if c in ("id", "family") else _g(rec.get(c)) for c, _ in MODEL_COLS)
                 + " |")
    g = ctx.get("control_gates", {})
    if g:
        L += ["", f"Control (METHOD §8): in the ResNets ({g['models']} models; batch norm is affine at evaluation), "
                  "freezing the ReLU gates at ε = 0 makes the path affine: the median over models of the median "
                  f"frozen / unfrozen ratio is {_g(g['median_ratio'], 3)}, the largest frozen curvedness over every "
                  f"measured ResNet sample {_g(g['max_frozen_curvedness'], 3)} (float32 rounding on the shortest "
                  "windows; the unfrozen headline is 0.01–0.05). The ConvNeXts keep "
                  "LayerNorm, which is not affine, so their gate-frozen ratio is not a control."]
    if ctx["evolution"]:
        L += ["", "## Training evolution", "", "| series | family | epochs | median curvedness per checkpoint | "
              "samples |", "|---|---|---|---|---|"]
        for s in ctx["evolution"]:
            L.append(f"| {s['series']} | {s['family']} | {', '.join(map(str, s['epochs']))} | "
                     f"{', '.join(_g(v, 3) for v in s['medians'])} | {s['n_samples']} |")
    L += ["", "## Caveats", "",
          "- The models are small ones trained on Fashion-MNIST (28×28); the paper's are ImageNet-scale ViT, Swin and "
          "ResNet. A verdict here is about this population.",
          "- The boundary-relative window puts every sample's window at the same place relative to its boundary, but "
          "its length in ε is the travel distance itself; a longer window may measure a larger curvedness by itself, "
          "so the within-model and mixed-model relations of finding 2 are not free of that confound.",
          "- Jump-out and ablation are measured on the first samples of each run (protocol `max_samples`); the "
          "samples that could not jump out within the cap are counted in the model table, never dropped.", ""]
    return "\n".join(L)


def render_html(md: str) -> str:
    """A self-contained page of the Markdown: every cell and line escaped."""
    out = ["<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
           "<title>robcurve: reproducing Curved Representation Space of Vision Transformers</title><style>"
           "body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}table{border-collapse:collapse;"
           "display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style>"
           "</head><body>"]
    in_table = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")]
            if set(line) <= set("|-"):
                continue
            if not in_table:
                out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
                in_table = True
            else:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            k = len(line) - len(line.lstrip("#"))
            out.append(f"<h{k}>{html.escape(line[k:].strip())}</h{k}>")
        elif line.startswith("- "):
            out.append(f"<p>• {html.escape(line[2:])}</p>")
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def report_json(rows: list[Row], ctx: Mapping[str, Any], man: Mapping[str, Any]) -> str:
    df: pd.DataFrame = ctx["models"]
    models = [{c: (rec[c] if c in ("id", "family") else _num(rec.get(c))) for c, _ in MODEL_COLS}
              for _, rec in df.sort_values(["family", "id"]).iterrows()]
    data = {"format": FORMAT, "paper": PAPER, "inputs": MANIFEST, "board": man["board"],
            "rows": [_num(dict(r.__dict__)) for r in rows], "models": models,
            "mixed": _num(ctx.get("mixed", [])), "evolution": _num(ctx["evolution"]),
            "control_gates": _num(ctx.get("control_gates", {})), "accuracy_source": ctx["accuracy_source"]}
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def build_report(report_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Rebuild the report from the files ``inputs.json`` names (no model); write it to ``out_dir`` (default: the same)."""
    rdir = Path(report_dir)
    st = load_study(rdir)
    rows, ctx = analyse(st)
    md = render_markdown(rows, ctx, st.manifest)
    out = Path(out_dir) if out_dir else rdir
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.json").write_text(report_json(rows, ctx, st.manifest), encoding="utf-8")
    (out / "report.html").write_text(render_html(md), encoding="utf-8")
    return {"rows": rows, "context": ctx, "markdown": md, "report_dir": out}


def verdict_table(rows: list[Row]) -> str:
    """The verdict rows as a compact Markdown table (for the terminal)."""
    L = ["| row | value | n | p | p (Holm) | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.expect != "none":
            L.append(f"| {r.id} | {_g(r.value)} | {_cell(r.n)} | {_p(r.p)} | {_p(r.p_holm)} | {_cell(r.verdict)} |")
    return "\n".join(L)
