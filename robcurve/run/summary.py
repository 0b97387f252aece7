"""Per-model statistics of a run (METHOD.md §6), its leaderboard entry, CSV and plots.

Statistics state n; censored travel distances are counted and ranked above every finite
distance (never dropped, never replaced by a number); intervals are seeded percentile
bootstrap 95% intervals. Curvature and distance statistics use the correctly classified
samples; calibration uses every sample.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import robcurve
from robcurve.run.config import RunConfig
from robcurve.run.store import Store


@dataclass(frozen=True)
class Metric:
    description: str
    higher_is_better: bool | None  # None: no ranking direction (descriptive)
    unit: str = ""


# every summary metric, with its direction, so tables and rankings follow from here
METRICS: dict[str, Metric] = {
    "clean_acc": Metric("clean accuracy", True, "fraction"),
    "ece": Metric("expected calibration error, clean", False),
    "sece": Metric("signed ECE, clean (positive = underconfident)", None),
    "mce": Metric("maximum calibration error, clean", False),
    "nll": Metric("negative log-likelihood, clean", False, "nats"),
    "brier": Metric("Brier score (multi-class), clean", False),
    "curvedness_median": Metric("median headline curvedness 1 - R^2 of the penultimate response", None),
    "curvedness_mean": Metric("mean headline curvedness", None),
    "curved_share": Metric("share of samples whose curvedness exceeds the threshold", None, "fraction"),
    "logit_curvedness_median": Metric("median curvedness of the logits", None),
    "total_turning_mean": Metric("mean total turning of the penultimate path", None, "degrees per unit eps"),
    "straightness_median": Metric("median straightness over [-E, E] (1 = straight)", None),
    "unresolved": Metric("samples whose in-class region has < 5 grid points", None, "count"),
    "travel_median": Metric("median travel distance along d to the first label flip", True, "L-inf eps"),
    "travel_median_l2": Metric("median travel distance, L2 norm of eps d", True, "L2"),
    "travel_censored": Metric("samples not flipped by eps_max", None, "count"),
    "pgd_robust_acc": Metric("PGD robust accuracy at the budget", True, "fraction"),
    "pgd_adv_ece": Metric("ECE on PGD examples", False),
    "pgd_adv_sece": Metric("signed ECE on PGD examples", None),
    "pgd_distance_median": Metric("median smallest PGD budget that succeeds", True),
    "deepfool_l2_median": Metric("median DeepFool L2 distance (upper bound on the boundary distance)", True, "L2"),
    "deepfool_success": Metric("DeepFool success rate", None, "fraction"),
    "shortcut_ratio_median": Metric("median jump-out shortcut ratio (< 1: a near boundary hidden by curvature)", None),
    "shortcut_below_1_curved": Metric("share of curved samples with shortcut ratio < 1", None, "fraction"),
    "shortcut_below_1_straight": Metric("share of straight samples with shortcut ratio < 1", None, "fraction"),
    "curvedness_after_jump_median": Metric("median curvedness after the jump", None),
    "spearman_curvedness_travel": Metric("Spearman(curvedness, travel distance) within the model", None),
    "spearman_curvedness_confidence": Metric("Spearman(curvedness, confidence) within the model", None),
}


def _median(v: np.ndarray) -> float:
    return float(np.median(v)) if v.size else math.nan


def _finite_mean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def bootstrap_ci(values: list[np.ndarray], stat, b: int, seed: int) -> tuple[float, float] | None:
    """Percentile 95% interval of ``stat(*values)`` over ``b`` paired resamples."""
    n = len(values[0])
    if b <= 0 or n < 3:
        return None
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(b):
        idx = rng.integers(0, n, n)
        out.append(stat(*(v[idx] for v in values)))
    arr = np.asarray(out, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None
    return float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


def frames(store: Store) -> dict[str, pd.DataFrame]:
    """One DataFrame per measurement, one row per sample (nested dicts flattened with '.')."""
    by: dict[str, list[tuple]] = {}
    for sample, split_index, m, label, value in store.rows():
        by.setdefault(m, []).append((sample, split_index, label, value))
    out = {}
    for m, rows in by.items():
        df = pd.json_normalize([r[3] for r in rows], sep=".")
        df.insert(0, "label", [r[2] for r in rows])
        df.insert(0, "split_index", [r[1] for r in rows])
        df.insert(0, "sample", [r[0] for r in rows])
        out[m] = df.set_index("sample").sort_index()
    return out


def results_digest(store: Store) -> str:
    h = hashlib.sha256()
    for sample, split_index, m, label, value in store.rows():
        h.update(json.dumps([sample, split_index, m, label, value], sort_keys=True).encode())
    return h.hexdigest()


def _calib(df: pd.DataFrame, prefix: str, labels: np.ndarray, n_bins: int, boot: int, seed: int):
    from robcurve.calibration import calibration

    probs = np.stack([np.asarray(p, dtype=np.float64) for p in df[prefix + "probs"]])
    return calibration(probs, labels, n_bins=n_bins, probs=True, bootstrap=boot, seed=seed)


def conditions(df: pd.DataFrame, n_bins: int, seed: int) -> dict[str, Any]:
    """Calibration per condition of a frame whose columns are ``<condition>.probs`` etc."""
    keys = sorted({c.rsplit(".", 1)[0] for c in df.columns if c.endswith(".conf")})
    return {k: _calib(df, k + ".", df["label"].to_numpy(), n_bins, 0, seed) for k in keys}


def compute_summary(fr: dict[str, pd.DataFrame], cfg: RunConfig) -> dict[str, Any]:
    """The metrics of METHOD.md §6 from the per-sample frames: {metrics, ci, n, notes}."""
    b, seed, nb = cfg.summary.bootstrap, cfg.seed, cfg.calibration.n_bins
    m: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    n: dict[str, int] = {}
    clean = fr["clean"]
    labels = clean["label"].to_numpy()
    correct = clean["correct"].to_numpy(bool)
    m["clean_acc"] = float(correct.mean())
    n["clean_acc"] = len(clean)
    cal = _calib(clean, "", labels, nb, b, seed)
    m.update(ece=cal.ece, sece=cal.sece, mce=cal.mce, nll=cal.nll, brier=cal.brier)
    ci.update({k: list(v) for k, v in cal.ci.items() if k in ("ece", "sece")})
    n.update(ece=len(clean), sece=len(clean))
    per_condition: dict[str, Any] = {}
    for meas, tag in (("corruptions", ""), ("adv_calibration", f"pgd-{cfg.pgd.norm}@")):
        if meas in fr:
            for key, r in conditions(fr[meas], nb, seed).items():
                per_condition[tag + key] = {"acc": r.accuracy, "ece": r.ece, "sece": r.sece, "n": r.n}
    if "trajectory" in fr:
        tr = fr["trajectory"]
        ok = tr["correct"].to_numpy(bool) & ~tr["unresolved"].to_numpy(bool)
        E = cfg.trajectory.E
        cur_col = f"feat_curvedness_E{E:g}"
        cv = tr[cur_col].to_numpy(float)
        good = ok & np.isfinite(cv)
        m["curvedness_median"] = _median(cv[good])
        m["curvedness_mean"] = float(cv[good].mean()) if good.any() else math.nan
        ci["curvedness_mean"] = bootstrap_ci([cv[good]], np.mean, b, seed)
        m["curved_share"] = float((cv[good] > cfg.trajectory.curved_threshold).mean()) if good.any() else math.nan
        lc = tr[f"logit_curvedness_E{E:g}"].to_numpy(float)
        m["logit_curvedness_median"] = _median(lc[good & np.isfinite(lc)])
        m["total_turning_mean"] = _finite_mean(tr["feat_total_turning"].to_numpy(float)[good])
        m["straightness_median"] = _median(tr[f"feat_straightness_E{E:g}"].to_numpy(float)[good])
        m["unresolved"] = int(tr["unresolved"].to_numpy(bool)[tr["correct"].to_numpy(bool)].sum())
        ladder = {}
        for sp in ("feat", "logit"):
            for c in [c for c in tr.columns if c.startswith(f"{sp}_angle_h")]:
                ladder[c] = _finite_mean(tr[c].to_numpy(float)[good])
        m["ladder"] = ladder
        n.update(curvedness_median=int(good.sum()), curvedness_mean=int(good.sum()), curved_share=int(good.sum()))
        m["curvature_scale"] = {"E": E, "T": cfg.trajectory.T, "step": 2 * E / (cfg.trajectory.T - 1),
                                "region": cfg.trajectory.region, "threshold": cfg.trajectory.curved_threshold}
    if "travel" in fr:
        tv = fr["travel"]
        ok = tv["correct"].to_numpy(bool)
        eps = tv["eps"].to_numpy(float)
        eps = np.where(tv["censored"].to_numpy(bool), np.inf, eps)[ok]
        l2 = np.where(tv["censored"].to_numpy(bool), np.inf, tv["l2"].to_numpy(float))[ok]
        m["travel_median"], m["travel_median_l2"] = _median(eps), _median(l2)
        m["travel_censored"] = int(tv["censored"].to_numpy(bool)[ok].sum())
        ci["travel_median"] = bootstrap_ci([eps], np.median, b, seed)
        n.update(travel_median=int(ok.sum()), travel_median_l2=int(ok.sum()))
        if "trajectory" in fr:
            tr = fr["trajectory"].loc[tv.index]
            cv = tr[f"feat_curvedness_E{cfg.trajectory.E:g}"].to_numpy(float)[ok]
            both = np.isfinite(cv)
            m["spearman_curvedness_travel"] = spearman(cv[both], eps[both])
            ci["spearman_curvedness_travel"] = bootstrap_ci([cv[both], eps[both]], spearman, min(b, 500), seed)
            n["spearman_curvedness_travel"] = int(both.sum())
    if "trajectory" in fr:
        tr = fr["trajectory"]
        cv = tr[f"feat_curvedness_E{cfg.trajectory.E:g}"].to_numpy(float)
        conf = fr["clean"].loc[tr.index, "conf"].to_numpy(float)
        both = np.isfinite(cv) & tr["correct"].to_numpy(bool)
        m["spearman_curvedness_confidence"] = spearman(cv[both], conf[both])
        ci["spearman_curvedness_confidence"] = bootstrap_ci([cv[both], conf[both]], spearman, min(b, 500), seed)
        n["spearman_curvedness_confidence"] = int(both.sum())
    if "pgd" in fr:
        pg = fr["pgd"]
        m["pgd_robust_acc"] = float((pg["clean_correct"].to_numpy(bool) & ~pg["success"].to_numpy(bool)).mean())
        m["pgd_eps"] = cfg.pgd_eps()
        r = _calib(pg, "adv_", pg["label"].to_numpy(), nb, 0, seed)
        m["pgd_adv_ece"], m["pgd_adv_sece"] = r.ece, r.sece
        n["pgd_robust_acc"] = len(pg)
    if "pgd_distance" in fr:
        pdd = fr["pgd_distance"]
        ok = pdd["clean_correct"].to_numpy(bool)
        v = np.where(pdd["censored"].to_numpy(bool), np.inf, pdd["budget"].to_numpy(float))[ok]
        m["pgd_distance_median"] = _median(v)
        m["pgd_distance_censored"] = int(pdd["censored"].to_numpy(bool)[ok].sum())
        n["pgd_distance_median"] = int(ok.sum())
    if "deepfool" in fr:
        df = fr["deepfool"]
        ok = df["clean_correct"].to_numpy(bool)
        succ = df["success"].to_numpy(bool)
        l2 = np.where(succ, df["l2"].to_numpy(float), np.inf)[ok]
        m["deepfool_l2_median"] = _median(l2)
        m["deepfool_success"] = float(succ[ok].mean()) if ok.any() else math.nan
        ci["deepfool_l2_median"] = bootstrap_ci([l2], np.median, b, seed)
        n["deepfool_l2_median"] = int(ok.sum())
    if "jumpout" in fr:
        jo = fr["jumpout"]
        ok = jo["correct"].to_numpy(bool) & ~jo["censored_before"].to_numpy(bool)
        sr = jo["shortcut_ratio"].to_numpy(float)
        good = ok & np.isfinite(sr)
        m["shortcut_ratio_median"] = _median(sr[good])
        cb = jo["curvedness_before"].to_numpy(float)
        curved = good & (cb > cfg.trajectory.curved_threshold)
        straight = good & (cb <= cfg.trajectory.curved_threshold)
        m["shortcut_below_1_curved"] = float((sr[curved] < 1).mean()) if curved.any() else math.nan
        m["shortcut_below_1_straight"] = float((sr[straight] < 1).mean()) if straight.any() else math.nan
        ca = jo["curvedness_after"].to_numpy(float)
        m["curvedness_after_jump_median"] = _median(ca[good & np.isfinite(ca)])
        m["jump_flipped"] = int(jo["jump_flipped"].to_numpy(bool).sum())
        n.update(shortcut_ratio_median=int(good.sum()), shortcut_below_1_curved=int(curved.sum()),
                 shortcut_below_1_straight=int(straight.sum()))
    return {"metrics": m, "ci": ci, "n": n, "conditions": per_condition}


def entry(summary: dict, cfg: RunConfig, model_info: dict, digest: str, n: int) -> dict:
    """A leaderboard entry: RobustBench model_info fields plus a ``robcurve`` block."""
    m = summary["metrics"]
    base_ds = cfg.dataset.split("-c:")[0]
    return {
        "name": model_info.get("spec") or cfg.model,
        "authors": "", "venue": "", "paper": "",
        "architecture": model_info.get("arch", ""),
        "dataset": "fashion-mnist" if base_ds.startswith("fashion-mnist") else base_ds,
        "threat_model": cfg.pgd.norm if cfg.threat_model != "corruptions" else "corruptions",
        "eps": cfg.pgd_eps() if "pgd" in summary["metrics"] or cfg.attack == "pgd" else None,
        "clean_acc": round(100 * m["clean_acc"], 2),
        "reported": None if "pgd_robust_acc" not in m else round(100 * m["pgd_robust_acc"], 2),
        "autoattack_acc": None,
        "additional_data": False,
        "number_forward_passes": 1,
        "footnote": (f"robust accuracy: PGD-{cfg.pgd.steps} ({cfg.pgd.restarts} restart(s)) on {n} samples, not AutoAttack"
                     if "pgd_robust_acc" in m else ""),
        "robcurve": {
            "version": robcurve.__version__,
            "model": model_info,
            "n": n,
            "metrics": m, "ci": summary["ci"], "metric_n": summary["n"], "conditions": summary["conditions"],
            "config": cfg.model_dump(),
            "config_digest": cfg.digest(),
            "results_digest": digest,
        },
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "inf" if v == math.inf else ("nan" if math.isnan(v) else f"{v:.4g}")
    return str(v)


def table(summary: dict) -> str:
    from tabulate import tabulate

    rows = []
    for k, v in summary["metrics"].items():
        if isinstance(v, dict):
            continue
        c = summary["ci"].get(k)
        rows.append((k, _fmt(v), "" if not c else f"[{_fmt(c[0])}, {_fmt(c[1])}]", summary["n"].get(k, ""),
                     METRICS[k].description if k in METRICS else ""))
    for cond, r in summary["conditions"].items():
        rows.append((f"under {cond}", f"acc {_fmt(r['acc'])}", f"ECE {_fmt(r['ece'])} sECE {_fmt(r['sece'])}", r["n"], ""))
    ladder = summary["metrics"].get("ladder")
    if ladder:
        rows.append(("angle ladder (deg)", " ".join(f"{k.split('_h')[-1]}:{_fmt(v)}" for k, v in ladder.items() if k.startswith("feat")),
                     "", "", "mean penultimate turning angle at step h (h: degrees)"))
    return tabulate(rows, headers=["metric", "value", "95% CI", "n", "what"], tablefmt="github")


def plots(fr: dict[str, pd.DataFrame], cfg: RunConfig, out: Path, name: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    E = cfg.trajectory.E
    if "trajectory" in fr:
        from robcurve.plots import plot_curvature_hist

        tr = fr["trajectory"]
        v = tr[f"feat_curvedness_E{E:g}"].to_numpy(float)[tr["correct"].to_numpy(bool)]
        fig = plot_curvature_hist({name: v[np.isfinite(v)]})
        fig.savefig(out / "curvature_hist.png", dpi=110)
        plt.close(fig)
        made.append("curvature_hist.png")
        if "travel" in fr:
            tv = fr["travel"]
            ok = tv["correct"].to_numpy(bool)
            fig, ax = plt.subplots(figsize=(5, 4))
            eps = tv["eps"].to_numpy(float)
            cens = tv["censored"].to_numpy(bool)
            cv = tr[f"feat_curvedness_E{E:g}"].to_numpy(float)
            ax.scatter(cv[ok & ~cens], eps[ok & ~cens], s=8, alpha=0.6, label="flipped")
            if (ok & cens).any():
                ax.scatter(cv[ok & cens], np.full((ok & cens).sum(), cfg.travel.eps_max), marker="^", s=10,
                           label=f"censored (> {cfg.travel.eps_max:g})")
            ax.set_xlabel(f"curvedness 1 - R² over [-{E:g}, {E:g}]")
            ax.set_ylabel("travel distance ε (L∞)")
            ax.set_title(name)
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / "curvature_vs_travel.png", dpi=110)
            plt.close(fig)
            made.append("curvature_vs_travel.png")
    from robcurve.calibration import reliability_diagram

    res = {"clean": _calib(fr["clean"], "", fr["clean"]["label"].to_numpy(), cfg.calibration.n_bins, 0, cfg.seed)}
    if "corruptions" in fr:
        res.update(list(conditions(fr["corruptions"], cfg.calibration.n_bins, cfg.seed).items())[:3])
    fig = reliability_diagram(res, title=name)
    fig.savefig(out / "reliability.png", dpi=110)
    plt.close(fig)
    made.append("reliability.png")
    return made


def trajectory_plots(model, data, cfg: RunConfig, out: Path, k: int = 3) -> str | None:
    """PCA view of the first k correctly classified samples' trajectories (k x T forwards)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from robcurve.geometry import get_direction, trajectory
    from robcurve.plots import plot_trajectory_pca

    x, y = data.images[: 4 * k].to(model.device, model.dtype), data.labels[: 4 * k].to(model.device)
    with torch.no_grad():
        ok = (model(x).argmax(1) == y).nonzero().flatten()[:k].cpu()
    if ok.numel() == 0:
        return None
    x, y = x[ok], y[ok]
    d = get_direction(model, x, y, kind=cfg.direction.kind, seed=cfg.seed, **cfg.direction_options())
    traj = trajectory(model, x, d, T=cfg.trajectory.T, E=cfg.trajectory.E, clamp=cfg.direction.clamp, y=y)
    fig, axes = plt.subplots(1, len(ok), figsize=(4 * len(ok), 3.6))
    for i, ax in enumerate(np.atleast_1d(axes)):
        plot_trajectory_pca(traj, i, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "trajectories.png", dpi=110)
    plt.close(fig)
    return "trajectories.png"


def write_outputs(store: Store, out: Path, cfg: RunConfig, model, data) -> dict:
    fr = frames(store)
    summary = compute_summary(fr, cfg)
    digest = results_digest(store)
    name = model.info.extra.get("alias") or model.info.spec
    e = entry(summary, cfg, model.info.to_dict(), digest, len(data))
    (out / "entry.json").write_text(json.dumps(e, indent=2, default=float) + "\n")
    wide = None
    for meas, df in fr.items():
        df2 = df.drop(columns=[c for c in df.columns if c.endswith("probs")]).add_prefix(f"{meas}.")
        wide = df2 if wide is None else wide.join(df2, how="outer")
    wide.to_csv(out / "samples.csv")
    summary["plots"] = plots(fr, cfg, out, name)
    tp = trajectory_plots(model, data, cfg, out) if "trajectory" in fr else None
    if tp:
        summary["plots"].append(tp)
    summary["table"] = table(summary)
    (out / "summary.md").write_text(f"# {name} on {cfg.dataset} (n={len(data)})\n\n{summary['table']}\n")
    return summary
