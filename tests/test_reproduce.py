"""Issue #13: the ``layers`` measurement, ``robcurve track`` and ``robcurve reproduce``.

* layers: registered, its rows and plot come from the store, its ``features`` row is the run's
  headline curvedness at the same scale;
* track on a two-checkpoint series equals bench run on each checkpoint separately;
* reproduce --quick: every number of the report's verdict table equals the value computed
  through the public API on the same samples, and every verdict follows from its stated rule.
"""

from __future__ import annotations

import html
import json
import math
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

import robcurve
from robcurve.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _store_rows(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(str(run_dir / "results.sqlite"))
    rows = con.execute("SELECT sample, split_index, measurement, label, value FROM results "
                       "ORDER BY measurement, sample").fetchall()
    con.close()
    return rows


def test_layers_measurement(tmp_path):
    from robcurve.run.layers import layer_index, plot_layers
    from robcurve.run.measures import MEASUREMENTS

    assert "layers" in MEASUREMENTS
    out = tmp_path / "run"
    assert main(["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--n", "4", "--attack", "none",
                 "--measurements", "clean,trajectory,layers", "--set", "trajectory.region=full",
                 "--set", "layers.max_samples=3", "--out", str(out), "--no-progress"]) == 0
    r = robcurve.load_run(out)
    df = r.frames["layers"]
    idx = layer_index(df)
    kinds = [k for _, _, k, _ in idx]
    assert {"attn", "mlp", "attn_res", "block"} <= set(kinds) and kinds[-2:] == ["features", "logits"]
    assert df["measured"].tolist() == [True, True, True, False]  # max_samples
    key = next(k for k, name, _, _ in idx if name == "features")
    feat = df[f"layer.{key}.curvedness"].to_numpy(float)[:3]
    np.testing.assert_allclose(feat, r.frames["trajectory"]["feat_curvedness_E0.1"].to_numpy(float)[:3], rtol=1e-9)
    scale = "E=0.1 step=0.01 full"
    row = r.row("layer_curvedness_median", f"features | {scale}")
    assert row is not None and row.n == 3 and row.value == pytest.approx(float(np.median(feat)))
    assert r.row("layer_kind_curvedness_median", f"attn | {scale}") is not None
    assert r.row("layer_attn_minus_mlp", scale) is not None
    # the API gives the same profile
    model = robcurve.load_model("zoo:vit-fmnist")
    data = robcurve.load_dataset("fashion-mnist-embedded", n=4, seed=0)
    d = robcurve.get_direction(model, data.images, data.labels, kind="fgsm")
    prof = robcurve.layer_profile(model, data.images[:3], d[:3], 0.1, T=21, region="full", y=data.labels[:3])
    np.testing.assert_allclose(df[f"layer.{idx[0][0]}.curvedness"].to_numpy(float)[:3], (1 - prof.r2[0]).numpy(),
                               rtol=1e-9)
    assert plot_layers(r.frames, r.config, tmp_path) == ["layers.png"]
    assert (tmp_path / "layers.png").stat().st_size > 1000


def test_track_equals_bench_per_checkpoint(tmp_path, capsys):
    from robcurve.run.config import load_config
    from robcurve.run.runner import run

    args = ["--config", SMOKE, "--n", "4", "--measurements", "clean,trajectory,travel", "--attack", "none"]
    tdir = tmp_path / "track"
    assert main(["track", "zoo:vit-fmnist@1,2", *args, "--out", str(tdir), "--no-progress", "--no-summaries"]) == 0
    assert "epoch=1" in (tdir / "track.csv").read_text()
    for f in ("track.md", "track.png", "track.json"):
        assert (tdir / f).is_file()
    from robcurve.reproduce import load_track

    res = load_track(tdir)
    assert sorted(set(res.table["epoch"])) == [1, 2]
    for ep in (1, 2):
        cfg = load_config(SMOKE, {"n": 4, "measurements": ["clean", "trajectory", "travel"], "attack": "none",
                                  "model": f"zoo:vit-fmnist@{ep}", "out": str(tmp_path / f"bench{ep}")})
        run(cfg, progress=False, verbose=False, summarize=False)
        bench = robcurve.load_run(tmp_path / f"bench{ep}")
        tr_dir = tdir / "vit-fmnist" / f"epoch_{ep:03d}"
        assert _store_rows(tr_dir) == _store_rows(tmp_path / f"bench{ep}")  # the same per-sample results
        sub = res.table[res.table["epoch"] == ep]
        assert set(sub["condition"]) == {f"epoch={ep}"}
        assert len(sub) == len(bench.rows)
        for brow, (_, trow) in zip(bench.rows, sub.iterrows(), strict=True):
            assert (trow["metric"], trow["measured_at"]) == (brow.metric, brow.condition)
            for k in ("value", "lo", "hi"):
                a, b = getattr(brow, k), trow[k]
                assert (a is None and (b is None or (isinstance(b, float) and math.isnan(b)))) or a == b \
                    or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
            assert res.value("vit-fmnist", ep, brow.metric, brow.condition) == pytest.approx(
                brow.value, nan_ok=True) or brow.value is None


# -- reproduce --quick against the public API ---------------------------------------------------------
def _cols(df, pattern):
    rx = re.compile(pattern)
    return [(c, rx.fullmatch(c).group(1)) for c in df.columns if rx.fullmatch(c)]


def _api_quantities(spec: str, cfg) -> dict[str, np.ndarray]:
    """The per-sample quantities of report.json's recipes, computed with the public API only."""
    nan = np.nan
    t, tv = cfg.trajectory, cfg.travel
    model = robcurve.load_model(spec)
    data = robcurve.load_dataset(cfg.dataset, n=cfg.n, seed=cfg.seed)
    x, y = data.images, data.labels
    seed = cfg.seed * 1_000_003  # the batch seed of the one batch (batch_size >= n)
    q: dict[str, np.ndarray] = {}
    with torch.no_grad():
        p = torch.softmax(model(x).double(), 1)
    q["conf"] = p.max(1).values.numpy()
    q["correct"] = (p.argmax(1) == y).numpy().astype(float)
    q["sece_clean"] = q["correct"] - q["conf"]
    d = robcurve.get_direction(model, x, y, kind=cfg.direction.kind)
    cur = robcurve.curvature(robcurve.trajectory(model, x, d, T=t.T, E=t.E, y=y), region=t.region,
                             ladder=tuple(t.ladder)).to_dataframe()
    head = f"feat_curvedness_E{t.E:g}"
    ok = cur["correct"].to_numpy(bool) & ~cur["unresolved"].to_numpy(bool) & np.isfinite(cur[head].to_numpy(float))
    for tag in ("feat", "logit"):
        q[f"curv_{tag}"] = np.where(ok, cur[f"{tag}_curvedness_E{t.E:g}"].to_numpy(float), nan)
        for c, e in _cols(cur, rf"{tag}_r2_E(.+)"):
            q[f"curv_{tag}_E{e}"] = np.where(ok, 1 - cur[c].to_numpy(float), nan)
        for c, h in _cols(cur, rf"{tag}_angle_h(.+)"):
            q[f"angle_{tag}_h{h}"] = np.where(ok, cur[c].to_numpy(float), nan)
    q["curved"] = np.where(ok, (q["curv_feat"] > t.curved_threshold).astype(float), nan)
    td = robcurve.travel_distance(model, x, y, d, h=tv.h, tol=tv.tol, eps_max=tv.eps_max).to_dataframe()
    tok, cen = td["correct"].to_numpy(bool), td["censored"].to_numpy(bool)
    q["travel"] = np.where(tok, np.where(cen, np.inf, td["eps"].to_numpy(float)), nan)
    q["travel_l2"] = np.where(tok, np.where(cen, np.inf, td["l2"].to_numpy(float)), nan)
    df_ = robcurve.deepfool(model, x, y, norm=cfg.deepfool.norm, steps=cfg.deepfool.steps,
                            overshoot=cfg.deepfool.overshoot, candidates=cfg.deepfool.candidates)
    dl2 = np.where(df_.success.numpy(), df_.l2.numpy(), np.inf)
    q["deepfool_l2"] = np.where(df_.clean_correct.numpy(), dl2, nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        q["travel_over_deepfool"] = np.where(np.isfinite(q["deepfool_l2"]) & (q["deepfool_l2"] > 0),
                                             q["travel_l2"] / q["deepfool_l2"], nan)
    pdist = robcurve.pgd_distance(model, x, y, norm=cfg.pgd.norm, hi=cfg.pgd_distance.hi,
                                  bisection_steps=cfg.pgd_distance.bisection_steps, steps=cfg.pgd_distance.steps,
                                  seed=seed)
    q["pgd_dist"] = np.where(pdist.clean_correct.numpy(), np.where(pdist.censored.numpy(), np.inf,
                                                                   pdist.budget.numpy()), nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        q["travel_over_pgd"] = np.where(np.isfinite(q["pgd_dist"]) & (q["pgd_dist"] > 0), q["travel"] / q["pgd_dist"], nan)
    sec, acc = [], []
    for name in cfg.calibration.corruptions:
        for sev in cfg.calibration.severities:
            xc = robcurve.corrupt(x, name, sev, seed=cfg.seed, sample_seeds=data.indices)
            with torch.no_grad():
                pc = torch.softmax(model(xc).double(), 1)
            corr = (pc.argmax(1) == y).numpy().astype(float)
            sec.append(corr - pc.max(1).values.numpy())
            acc.append(corr)
    q["sece_corr"], q["acc_corr"] = np.mean(sec, 0), np.mean(acc, 0)
    for b in cfg.pgd.budgets:
        adv = robcurve.pgd(model, x, y, eps=b, norm=cfg.pgd.norm, steps=cfg.pgd.steps, step_size=cfg.pgd.step_size,
                           random_start=cfg.pgd.random_start, restarts=cfg.pgd.restarts, seed=seed)
        with torch.no_grad():
            pa = torch.softmax(model(adv.x_adv).double(), 1)
        q[f"sece_adv_{b:g}"] = (pa.argmax(1) == y).numpy().astype(float) - pa.max(1).values.numpy()
    j = cfg.jumpout
    for v, keep in (("recompute", False), ("keep", True)):
        jd = robcurve.jump_out(model, x, y, eta=j.eta, jump=j.jump, direction=cfg.direction.kind, keep_direction=keep,
                               seed=seed, T=t.T, E=t.E, region=t.region, ladder=tuple(t.ladder), h=tv.h, tol=tv.tol,
                               eps_max=tv.eps_max).to_dataframe()
        sr = jd["shortcut_ratio"].to_numpy(float)
        jok = jd["correct"].to_numpy(bool) & ~jd["censored_before"].to_numpy(bool) & np.isfinite(sr)
        cb, ca = jd["curvedness_before"].to_numpy(float), jd["curvedness_after"].to_numpy(float)
        tb = np.where(jd["censored_before"].to_numpy(bool), np.inf, jd["eps_before"].to_numpy(float))
        ta = np.where(jd["censored_after"].to_numpy(bool), np.inf, jd["eps_after"].to_numpy(float))
        pre = f"jump_{v}_"
        q[pre + "curved"] = np.where(jok & np.isfinite(cb), (cb > t.curved_threshold).astype(float), nan)
        q[pre + "curv_change"] = np.where(jok, ca - cb, nan)
        with np.errstate(invalid="ignore"):
            q[pre + "travel_change"] = np.where(jok, ta - tb, nan)
        q[pre + "below1"] = np.where(jok, (sr < 1).astype(float), nan)
    k = cfg.section("layers").max_samples
    prof = robcurve.layer_profile(model, x[:k], d[:k], t.E, T=t.T, region=t.region, y=y[:k])
    names = prof.names
    kinds = [s.kind for s in prof.layers]
    blocks = [s.block for s in prof.layers]
    cv = (1 - prof.r2).numpy()  # (L, k)
    diffs = []
    for b in sorted({b for b, kd in zip(blocks, kinds, strict=True) if kd == "attn"}):
        ia = next(i for i in range(len(names)) if blocks[i] == b and kinds[i] == "attn")
        im = next((i for i in range(len(names)) if blocks[i] == b and kinds[i] == "mlp"), None)
        if im is not None:
            diffs.append(cv[ia] - cv[im])
    if diffs:
        a = np.vstack(diffs)
        per = np.where(np.isfinite(a).sum(0) > 0, np.nansum(a, 0) / np.maximum(np.isfinite(a).sum(0), 1), nan)
        lok = (prof.clean_pred == y[:k]).numpy() & ~prof.unresolved.numpy()
        q["attn_minus_mlp"] = np.concatenate([np.where(lok, per, nan), np.full(len(y) - k, nan)])
    return q


def _api_track_quantities(spec: str, cfg) -> dict[str, np.ndarray]:
    t = cfg.trajectory
    model = robcurve.load_model(spec)
    data = robcurve.load_dataset(cfg.dataset, n=cfg.n, seed=cfg.seed)
    d = robcurve.get_direction(model, data.images, data.labels, kind=cfg.direction.kind)
    cur = robcurve.curvature(robcurve.trajectory(model, data.images, d, T=t.T, E=t.E, y=data.labels), region=t.region,
                             ladder=tuple(t.ladder)).to_dataframe()
    head = cur[f"feat_curvedness_E{t.E:g}"].to_numpy(float)
    ok = cur["correct"].to_numpy(bool) & ~cur["unresolved"].to_numpy(bool) & np.isfinite(head)
    return {"curv_feat": np.where(ok, head, np.nan)}


def _num(v):
    if v is None:
        return math.nan
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return float(v)


def _close(a, b) -> bool:
    a, b = _num(a), _num(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def _rule(lo, hi, expect) -> str:
    """The verdict rules as stated in the report, implemented independently."""
    if expect == "none":
        return "descriptive (no claim)"
    lo, hi = _num(lo), _num(hi)
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive at this n"
    if expect == "greater":
        return "supported" if lo > 0 else "not supported" if hi < 0 else "inconclusive at this n"
    if expect == "less":
        return "supported" if hi < 0 else "not supported" if lo > 0 else "inconclusive at this n"
    assert expect == "change"
    return "supported" if lo > 0 or hi < 0 else "inconclusive at this n"


def _pool(Q, sels):
    out = []
    for s in sels:
        v = np.asarray(Q[s["model"]][s["q"]], float).copy()
        if s.get("where"):
            v = np.where(Q[s["model"]][s["where"][0]] == s["where"][1], v, np.nan)
        out.append(v)
    return np.vstack(out)


@pytest.mark.slow
def test_reproduce_quick_matches_api(tmp_path):
    from robcurve import stats
    from robcurve.reproduce.paper import evaluate
    from robcurve.reproduce.report import measured_text

    out, rep = tmp_path / "rq", tmp_path / "report"
    small = [f"--set={s}" for s in ("trajectory.T=61", "trajectory.ladder=[1,5,10]", "travel.h=0.01", "travel.tol=0.0001",
                                    "travel.eps_max=0.3", "pgd.steps=3", "pgd_distance.bisection_steps=2",
                                    "pgd_distance.steps=3", "deepfool.steps=10", "deepfool.candidates=4",
                                    "calibration.corruptions=[gaussian_noise]")]
    assert main(["reproduce", "--quick", "--n", "8", "--layer-samples", "2", "--series", "zoo:vit-fmnist@2,3",
                 "--models", "zoo:vit-fmnist,zoo:convnext-fmnist",  # the zoo's cheapest CNN on CPU
                 "--leaderboard", "none", "--out", str(out), "--report", str(rep), "--no-progress", *small]) == 0
    doc = json.loads((rep / "report.json").read_text())
    md = (rep / "report.md").read_text()
    page = (rep / "report.html").read_text()
    assert doc["meta"]["mode"] == "quick" and doc["meta"]["n"] == 8
    assert "<script" not in page and 'src="http' not in page and "<link" not in page  # self-contained
    assert (rep / "figures" / "jumpout.png").is_file() and (rep / "figures" / "evolution.png").is_file()
    cfg = robcurve.load_run(out / "models" / "zoo-vit-fmnist").config
    assert robcurve.load_run(out / "models" / "zoo-convnext-fmnist").config.n == 8
    Q = {m: _api_quantities(m, cfg) for m in ("zoo:vit-fmnist", "zoo:convnext-fmnist")}
    tcfg = robcurve.load_run(out / "track" / "vit-fmnist" / "epoch_002").config
    for ep in (2, 3):
        Q[f"zoo:vit-fmnist@{ep}"] = _api_track_quantities(f"zoo:vit-fmnist@{ep}", tcfg)
    rows = doc["rows"]
    findings = {r["finding"] for r in rows}
    assert {"1", "2", "3", "calibration", "attention", "evolution"} <= findings
    for r in rows:
        rec = r["recipe"]
        assert r["verdict"] == _rule(r["lo"], r["hi"], r["expect"]) or (
            rec["type"] == "relation" and r["verdict"] == "inconclusive at this n"), r["id"]
        assert measured_text(r) in md and html.escape(measured_text(r)) in page, r["id"]
        if rec["type"] == "relation":  # two models: no correlation across models can be read
            assert r["n_a"] == 2 and r["verdict"] in ("inconclusive at this n", "descriptive (no claim)")
            continue
        api = evaluate(rec, Q)
        for k in ("value", "lo", "hi", "stat_a", "stat_b"):
            assert _close(api[k], r[k]), (r["id"], k, api[k], r[k])
        assert api["n_a"] == r["n_a"] and api["n_b"] == r["n_b"], r["id"]
        if rec["type"] == "diff":  # the point values, independently of the report code
            f = stats.median_censored if rec["stat"] == "median" else np.mean
            a = _pool(Q, rec["a"]).ravel()
            sa = f(a[~np.isnan(a)])
            assert _close(sa, r["stat_a"]), r["id"]
            if rec.get("b"):
                b = _pool(Q, rec["b"]).ravel()
                assert _close(sa - f(b[~np.isnan(b)]), r["value"]), r["id"]
        else:
            x, y = Q[rec["x"]["model"]][rec["x"]["q"]], Q[rec["y"]["model"]][rec["y"]["q"]]
            ok = ~np.isnan(x) & ~np.isnan(y)
            assert _close(stats.spearman(x[ok], y[ok]), r["value"]), r["id"]
