"""Issue #13: the ``layers`` measurement, ``robcurve track`` and ``robcurve reproduce``.

* layers: registered, its rows and plot come from the store, its ``features`` row is the run's
  headline curvedness at the same scale;
* track on a two-checkpoint series equals bench run on each checkpoint separately;
* reproduce (issue 24 item 8): the committed report rebuilds byte for byte from the files its
  inputs.json names; its verdict rows recompute independently (scipy, statsmodels) from the
  shipped per-sample files; a changed input is refused; --quick runs end to end.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

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
REPORT = ROOT / "reports" / "paper"


def test_committed_report_rebuilds_byte_for_byte_from_files(tmp_path):
    """reproduce --from-files: the committed report from its listed per-sample files, no model."""
    from robcurve.reproduce.study import MANIFEST, load_study

    man = json.loads((REPORT / MANIFEST).read_text())
    assert main(["reproduce", "--from-files", str(REPORT), "--report", str(tmp_path / "paper")]) == 0
    for f in ("report.md", "report.json", "report.html"):
        assert (tmp_path / "paper" / f).read_bytes() == (REPORT / f).read_bytes(), f
    st = load_study(REPORT)
    assert len(st.frames) == len(man["entries"]) >= 24


def test_report_rows_recompute_from_the_shipped_files():
    """Each verdict row from the per-sample files and board entries with scipy / statsmodels directly."""
    import gzip

    from scipy.stats import binomtest, spearmanr
    from statsmodels.stats.multitest import multipletests

    doc = json.loads((REPORT / "report.json").read_text())
    man = json.loads((REPORT / "inputs.json").read_text())
    rows = {r["id"]: r for r in doc["rows"]}
    per_model = {}
    for e in man["entries"]:
        ent = json.loads((REPORT / e["entry"]).read_text())
        fam = ent["robcurve"]["model"]["family"]
        head = next(m["value"] for m in ent["robcurve"]["metrics"] if m["metric"] == "bw_curvedness_median")
        travel = next(m["value"] for m in ent["robcurve"]["metrics"] if m["metric"] == "travel_median")
        win = {}
        with gzip.open(REPORT / e["samples"], "rt") as f:
            for line in list(f)[1:]:
                s_, _, m, _, v = json.loads(line)
                if m == "window":
                    win[s_] = v
        c = np.array([v["feat_side"] if v["feat_side"] is not None else np.nan for v in win.values()], float)
        t = np.array([np.inf if v["censored"] else v["t"] for v in win.values()], float)
        ok = np.array([v["correct"] for v in win.values()]) & np.isfinite(c)
        per_model[e["id"]] = (fam, head, travel, spearmanr(c[ok], t[ok]).statistic)
    # within-model relation of finding 2: sign test over models
    rhos = np.array([v[3] for v in per_model.values()])
    r = rows["f2.within.sign"]
    k = int((rhos > 0).sum())
    assert math.isclose(r["p"], binomtest(k, len(rhos)).pvalue, rel_tol=1e-6)
    assert math.isclose(r["value"], float(np.median(rhos)), rel_tol=1e-6)
    # across models: Spearman of the board values
    heads = np.array([v[1] for v in per_model.values()])
    trav = np.array([v[2] for v in per_model.values()])
    assert math.isclose(rows["across.travel_median"]["value"], spearmanr(heads, trav).statistic, rel_tol=1e-6)
    # finding 1: difference of the family medians of the model medians
    fam = np.array([v[0] for v in per_model.values()])
    d = np.median(heads[fam == "transformer"]) - np.median(heads[fam == "cnn"])
    assert math.isclose(rows["f1.curvedness.transformer-cnn"]["value"], d, rel_tol=1e-6)
    # Holm over the verdict rows equals statsmodels'
    tested = [x for x in doc["rows"] if x["p_holm"] is not None]
    adj = multipletests([x["p"] for x in tested], method="holm")[1]
    assert np.allclose([x["p_holm"] for x in tested], adj, rtol=1e-6)
    for x in doc["rows"]:  # every verdict follows the stated rule
        if x["expect"] == "none":
            assert x["verdict"].startswith("context")
        elif x["p_holm"] is not None and x["p_holm"] < 0.05:
            want = {">0": x["value"] > 0, "<0": x["value"] < 0, "!=0": True}[x["expect"]]
            assert x["verdict"] == ("supported" if want else "contradicted (significant, opposite sign)"), x["id"]
        elif x["p_holm"] is not None:
            assert x["verdict"].startswith("no evidence"), x["id"]


def test_report_refuses_a_changed_input(tmp_path, capsys):
    from robcurve.reproduce.study import MANIFEST

    man = json.loads((REPORT / MANIFEST).read_text())
    rep = tmp_path / "rep"
    rep.mkdir()
    src = REPORT / man["entries"][0]["samples"]
    bad = tmp_path / "bad.samples.jsonl.gz"
    bad.write_bytes(src.read_bytes() + b"\0")
    man["board"] = str((REPORT / man["board"]).resolve())
    for e in man["entries"]:
        for k in ("entry", "samples"):
            e[k] = str((REPORT / e[k]).resolve())
    man["entries"][0]["samples"] = str(bad)
    (rep / MANIFEST).write_text(json.dumps(man))
    assert main(["reproduce", "--from-files", str(rep)]) == 2
    err = capsys.readouterr().err
    assert "changed since it was made" in err and "bad.samples.jsonl.gz" in err and "Traceback" not in err
    assert not (rep / "report.md").exists()
    assert main(["reproduce", "--from-files", str(tmp_path / "nothing")]) == 2
    assert "inputs.json" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path):
    """Measure two short training series at n = 4, export them, write inputs.json and the report; rebuild it."""
    rep, out = tmp_path / "report", tmp_path / "track"
    assert main(["reproduce", "--quick", "--n", "4", "--series", "zoo:resnet-fmnist@1,2,3", "--report", str(rep),
                 "--out", str(out), "--no-progress"]) == 0
    man = json.loads((rep / "inputs.json").read_text())
    assert [t["epoch"] for t in man["track"]] == [1, 2, 3]
    doc = json.loads((rep / "report.json").read_text())
    evo = doc["evolution"][0]
    assert evo["series"] == "resnet-fmnist" and evo["epochs"] == [1, 2, 3]
    # the per-checkpoint median equals the bench run's own window rows on the same samples
    first = robcurve.load_run(out / "resnet-fmnist" / "epoch_001").frames["window"]
    assert 0 < evo["n_samples"] <= 4 and len(first) == 4
    before = {f: (rep / f).read_bytes() for f in ("report.md", "report.json")}
    assert main(["reproduce", "--from-files", str(rep)]) == 0
    assert all((rep / f).read_bytes() == b for f, b in before.items())
