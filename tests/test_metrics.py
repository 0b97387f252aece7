"""The metric layer: registries, typed rows, statistics with honest intervals, summaries from the store.

Calibration simulations check the debiased estimator and its interval against known truths;
a toy measurement registered in one place must reach config validation, the CLI, the summary
table, CSV and entry.json; ``robcurve summarize`` must reproduce a run's outputs byte for byte
without loading the model.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, Field

import robcurve
from robcurve import stats
from robcurve.cli import main
from robcurve.run.results import metric_value

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
OUTPUTS = ("entry.json", "summary.md", "summary.csv", "summary.json", "samples.csv")


# -- statistics -----------------------------------------------------------------------------------
def _simulate(shift: float, seeds: int, n: int = 300, k: int = 15):
    """Confidences in [0.2, 1]; correctness ~ Bernoulli(conf + shift): every bin's true gap is ``shift``."""
    rng = np.random.default_rng(1234)
    out = []
    for _ in range(seeds):
        conf = 0.2 + 0.8 * rng.beta(5, 1.3, n)
        corr = (rng.random(n) < conf + shift).astype(float)
        est, lo, hi = stats.jackknife_ce2(conf, corr, k)
        out.append((est, lo, hi, stats.ece_plugin(conf, corr, k),
                    stats.ece_perfect(conf, corr, k, 300, int(rng.integers(1 << 30)))[3]))
    return np.array(out)


def test_debiased_calibration_error_centres_on_zero_for_a_calibrated_model():
    r = _simulate(0.0, 200)
    est, lo, hi, plug, p = r.T
    assert plug.mean() > 0.03  # the plug-in ECE of a perfectly calibrated model at n = 300 is far from 0
    assert abs(est.mean()) < 3 * est.std() / math.sqrt(len(est))  # unbiased within noise
    cover = np.mean((lo <= 0) & (0 <= hi))
    assert 0.90 <= cover <= 1.0, cover
    # p-values against perfect calibration are roughly uniform under the null
    assert 0.0 <= np.mean(p < 0.05) <= 0.12


def test_debiased_calibration_error_recovers_a_known_miscalibration():
    shift = -0.06  # overconfident by 6 points in every bin: true ECE 0.06, true squared CE 0.0036
    r = _simulate(shift, 200)
    est, lo, hi, plug, p = r.T
    assert est.mean() == pytest.approx(shift**2, rel=0.12)
    cover = np.mean((lo <= shift**2) & (shift**2 <= hi))
    assert 0.90 <= cover <= 1.0, cover
    assert np.mean(p < 0.05) > 0.5  # mostly distinguishable from perfect calibration
    root = np.sign(est.mean()) * math.sqrt(abs(est.mean()))
    assert abs(root - 0.06) < abs(plug.mean() - 0.06)  # closer to the truth than the plug-in


def test_wilson_median_and_spearman_against_known_values():
    lo, hi = stats.wilson(0, 12)
    assert lo == 0.0 and hi == pytest.approx(stats.Z95**2 / (12 + stats.Z95**2))
    lo, hi = stats.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)  # textbook value
    assert stats.median_censored(np.array([1.0, 3.0, np.inf])) == 3.0
    assert stats.median_censored(np.array([1.0, np.inf, np.inf])) == math.inf
    assert stats.median_censored(np.array([1.0, 2.0, np.inf, np.inf])) == math.inf
    assert stats.median_censored(np.array([1.0, 2.0, 4.0, np.inf])) == 3.0
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    b[:5] = np.inf
    assert stats.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert math.isnan(stats.spearman(np.ones(5), np.arange(5.0)))


def test_ece_plugin_equals_torchmetrics():
    import torch
    from torchmetrics.classification import MulticlassCalibrationError

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 10, generator=g) * 2
    y = torch.randint(0, 10, (400,), generator=g)
    p = logits.softmax(1)
    conf, pred = p.max(1)
    ref = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(p, y)
    assert stats.ece_plugin(conf.numpy(), (pred == y).numpy(), 15) == pytest.approx(float(ref), abs=1e-6)


def test_duplicate_metric_name_is_an_error():
    from robcurve.run.metrics import metric

    with pytest.raises(ValueError, match="registered twice"):
        metric("clean_acc", "clean", "again", "", "none", "mean", lambda i: {})


# -- runs -----------------------------------------------------------------------------------------------
def _bench(out: Path, *extra: str) -> None:
    rc = main(["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out", str(out), "--no-progress", *extra])
    assert rc == 0


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Every built-in measurement on 5 samples of the zoo ViT (small settings)."""
    out = tmp_path_factory.mktemp("full") / "run"
    main(["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out", str(out), "--no-progress",
          "--n", "5", "--batch-size", "5", "--attack", "pgd",
          "--measurements", "clean,trajectory,travel,pgd_distance,deepfool,jumpout,corruptions,adv_calibration",
          "--set", "pgd.budgets=[0.02,0.05]", "--set", "deepfool.steps=15", "--set", "deepfool.candidates=5",
          "--set", "pgd_distance.bisection_steps=3", "--set", "pgd_distance.steps=4", "--set", "summary.bootstrap=30"])
    assert (out / "entry.json").is_file()
    return out


def test_every_measurement_has_its_summary_rows(full_run):
    rows = json.loads((full_run / "entry.json").read_text())["robcurve"]["metrics"]
    names = {r["metric"] for r in rows}
    from robcurve.run.metrics import METRICS

    measured = {r["measurement"] for r in rows}
    assert {"clean", "trajectory", "travel", "pgd", "pgd_distance", "deepfool", "jumpout", "corruptions",
            "adv_calibration"} <= measured
    for n in METRICS.names():  # every metric of a measurement that ran (layers: tests/test_reproduce.py)
        if METRICS.get(n).measurement in measured:
            assert n in names, n
    # every row has a number or a stated reason; no row's interval is without its method
    for r in rows:
        assert r["value"] is not None or r["note"], r
        assert (r["lo"] is None) == (r["interval"] == "none") or r["lo"] is None, r


def test_summary_rows_equal_independent_computation(full_run):
    import torch

    from robcurve.calibration import calibration

    run = robcurve.load_run(full_run)
    s = run.samples
    ok = s["deepfool.clean_correct"].astype(bool)
    l2 = np.where(s.loc[ok, "deepfool.success"].astype(bool), s.loc[ok, "deepfool.l2"], np.inf)  # failures censored
    assert run.value("deepfool_l2_median") == pytest.approx(stats.median_censored(l2))
    # corruption conditions and their mean (CIFAR-10-C convention: mean over conditions)
    accs = [run.value("corruption_acc", c) for c in ("gaussian_noise:3", "fog:3")]
    assert run.value("corruption_acc", "mean") == pytest.approx(np.mean(accs))
    assert run.value("corruption_acc", "fog:3") == pytest.approx(s["corruptions.fog:3.correct"].astype(bool).mean())
    # calibration under attack: the torch implementation on the stored probabilities agrees
    fr = run.frames["adv_calibration"]
    for b in ("0.02", "0.05"):
        probs = torch.tensor(np.stack(fr[f"{b}.probs"].to_list()))
        cal = calibration(probs, torch.tensor(fr["label"].to_numpy()), n_bins=15, probs=True)
        assert run.value("adv_ece", f"eps={b}") == pytest.approx(cal.ece, abs=1e-6)
        assert run.value("adv_sece", f"eps={b}") == pytest.approx(cal.sece, abs=1e-6)
    # pgd distance and jump-out rows read the right samples
    pdd = s["pgd_distance.clean_correct"].astype(bool)
    v = np.where(s.loc[pdd, "pgd_distance.censored"].astype(bool), np.inf, s.loc[pdd, "pgd_distance.budget"])
    assert run.value("pgd_distance_median") == pytest.approx(stats.median_censored(v))
    jo = s["jumpout.correct"].astype(bool) & ~s["jumpout.censored_before"].astype(bool)
    assert run.value("shortcut_ratio_median") == pytest.approx(float(np.median(s.loc[jo, "jumpout.shortcut_ratio"])))
    assert run.value("jump_flipped") == s["jumpout.jump_flipped"].astype(bool).sum()


def test_summary_table_has_numbers_only_in_numeric_columns(full_run):
    md = (full_run / "summary.md").read_text().splitlines()
    head = next(i for i, ln in enumerate(md) if ln.startswith("| metric"))
    cols = [c.strip() for c in md[head].strip("|").split("|")]
    body = [ln for ln in md[head + 2:] if ln.startswith("|")]
    assert len(body) > 30
    for ln in body:
        cells = dict(zip(cols, [c.strip() for c in ln.strip("|").split("|")], strict=True))
        for c in ("value", "lo", "hi", "n"):
            if cells[c]:
                float(cells[c])  # raises on text
        assert "nan" not in ln.lower().split("|")[3]
    csv = __import__("pandas").read_csv(full_run / "summary.csv")
    assert len(csv) == len(body)
    entry_text = (full_run / "entry.json").read_text()
    json.loads(entry_text, parse_constant=lambda c: pytest.fail(f"bare {c} in entry.json"))


def test_summarize_reproduces_outputs_without_the_model(full_run, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(full_run, copy)
    names = [*OUTPUTS, *[p.name for p in full_run.glob("*.png")]]
    assert len(names) >= 9
    before = {n: (copy / n).read_bytes() for n in names}
    for n in names:
        (copy / n).unlink()

    def no_model(*a, **k):
        raise AssertionError("summarize loaded a model")

    monkeypatch.setattr("robcurve.models.load_model", no_model)
    monkeypatch.setattr("robcurve.run.runner.load_model", no_model)
    assert main(["summarize", str(copy)]) == 0
    for n in names:
        assert (copy / n).read_bytes() == before[n], n


# -- plugins ------------------------------------------------------------------------------------------
class ToyCfg(BaseModel):
    model_config = {"extra": "forbid"}
    scale: float = Field(2.0, gt=0)


def test_toy_measurement_registered_once_appears_everywhere(tmp_path, capsys):
    from robcurve.run.measures import MEASUREMENTS, Measurement, register_measurement
    from robcurve.run.metrics import METRICS, metric
    from robcurve.run.sections import SECTIONS

    def run_toy(ctx, start, x, y, split_idx):
        s = ctx.cfg.section("toy").scale
        return [{"v": float(s * x[i].mean())} for i in range(len(y))]

    def plot_toy(summary, out):  # the measurement's own figure, listed in summary.md
        (out / "toy.png").write_bytes(b"toy " + str(len(summary["frames"]["toy"])).encode())
        return ["toy.png"]

    register_measurement(Measurement("toy", run_toy, "toy: scaled mean pixel", order=95, config="toy",
                                     config_model=ToyCfg, plot=plot_toy, recheck="sample"))
    metric("toy_mean", "toy", "mean of the scaled mean pixel", "a.u.", "higher", "mean",
           lambda i: {"": (i.col("toy", "v"),)})
    try:
        # config validation knows the section
        assert main(["bench", "--config", SMOKE, "--measurements", "clean,toy", "--set", "toy.scale=-1",
                     "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
        assert "toy.scale" in capsys.readouterr().err
        assert main(["metrics"]) == 0
        assert "toy_mean" in capsys.readouterr().out
        out = tmp_path / "run"
        _bench(out, "--n", "4", "--measurements", "clean,toy", "--attack", "none", "--set", "toy.scale=3")
        printed = capsys.readouterr().out
        assert "toy_mean" in printed
        run = robcurve.load_run(out)
        data = robcurve.load_dataset("fashion-mnist-embedded", n=4, seed=0)
        expect = float((3 * data.images.flatten(1).mean(1)).mean())
        assert run.value("toy_mean") == pytest.approx(expect, rel=1e-5)
        assert "toy.v" in (out / "samples.csv").read_text().splitlines()[0]
        assert "toy_mean" in (out / "summary.csv").read_text()
        e = json.loads((out / "entry.json").read_text())
        assert metric_value(e["robcurve"]["metrics"], "toy_mean") == pytest.approx(expect, rel=1e-5)
        assert e["robcurve"]["config"]["options"]["toy"]["scale"] == 3
        assert (out / "toy.png").read_bytes() == b"toy 4" and "toy.png" in (out / "summary.md").read_text()
        from robcurve.leaderboard.submit import _per_sample

        assert _per_sample("toy", run.config) and not _per_sample("pgd", run.config)  # submit's re-check rule
    finally:
        MEASUREMENTS._items.pop("toy", None)
        METRICS._items.pop("toy_mean", None)
        SECTIONS._items.pop("toy", None)


def test_metric_reference_doc_is_generated_from_the_registry():
    from robcurve.run.docs import metrics_markdown

    assert (ROOT / "docs" / "metrics.md").read_text() == metrics_markdown()


def test_submodule_import_gives_the_module_and_result_types_summarise():
    import types

    import torch

    import robcurve.geometry.trajectory as mod

    assert isinstance(mod, types.ModuleType) and hasattr(mod, "Curvature")
    model = robcurve.load_model("zoo:vit-fmnist")
    data = robcurve.load_dataset("fashion-mnist-embedded", n=3, seed=0)
    d = robcurve.get_direction(model, data.images, data.labels, kind="fgsm")
    traj = robcurve.trajectory(model, data.images, d, T=21, E=0.1, y=data.labels)  # still callable
    assert torch.equal(traj.features, mod.trajectory(model, data.images, d, T=21, E=0.1, y=data.labels).features)
    cal = robcurve.calibration(model(data.images), data.labels)
    assert {"ece", "ece_perfect", "rmsce_debiased", "sece"} <= set(cal.summary()["metric"])
    assert len(cal.to_dataframe()) == 3


def test_curvature_and_jump_out_summaries_match_their_per_sample_tables():
    import numpy as np

    model = robcurve.load_model("zoo:vit-fmnist")
    data = robcurve.load_dataset("fashion-mnist-embedded", n=4, seed=0)
    d = robcurve.get_direction(model, data.images, data.labels, kind="fgsm")
    cur = robcurve.curvature(robcurve.trajectory(model, data.images, d, T=21, E=0.1, y=data.labels), ladder=(1, 5))
    s, df = cur.summary().iloc[0], cur.to_dataframe()
    ok = df["correct"].to_numpy(bool) & ~df["unresolved"].to_numpy(bool)
    assert s["feat_curvedness_median"] == pytest.approx(float(np.median(df["feat_curvedness_E0.1"][ok])))
    jo = robcurve.jump_out(model, data.images, data.labels, eta=2 / 255, T=21, E=0.1, h=0.01, tol=1e-4, eps_max=0.5)
    js, jd = jo.summary().iloc[0], jo.to_dataframe()
    k = jd["correct"].to_numpy(bool) & ~jd["censored_before"].to_numpy(bool)
    assert js["shortcut_ratio_median"] == pytest.approx(float(np.median(jd["shortcut_ratio"][k])))


def _bootstrap_loop(values, stat, b, seed):
    """The per-resample loop the vectorised bootstrap replaced (issue 26): one draw of n per resample."""
    n = len(values[0])
    rng = np.random.default_rng(seed)
    out = np.empty(b)
    for i in range(b):
        idx = rng.integers(0, n, n)
        out[i] = stat(*(v[idx] for v in values))
    out = out[~np.isnan(out)]
    return float(np.percentile(out, [2.5], method="lower")[0]), float(np.percentile(out, [97.5], method="higher")[0])


@pytest.mark.parametrize("case", ["finite", "censored", "ties", "bool", "tiny"])
def test_vectorised_bootstrap_equals_the_loop_bit_for_bit(case):
    """Stored intervals must not move: the matrix form gives exactly the loop's numbers."""
    from robcurve import stats

    rng = np.random.default_rng(3)
    n = {"tiny": 4}.get(case, 57)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    if case == "censored":
        x[rng.random(n) < 0.4] = np.inf
        y[:5] = np.inf
    if case == "ties":
        x, y = np.round(x), np.round(y * 2) / 2
    if case == "bool":
        x = (x > 0).astype(float)
    for stat, vals in ((np.mean, [x]), (stats.median_censored, [x]), (stats.spearman, [x, y])):
        got = stats.bootstrap_percentile(vals, stat, 400, 11)
        want = _bootstrap_loop(vals, stat, 400, 11)
        assert got == want, (case, stat.__name__, got, want)


def test_rankdata_equals_scipys_average_ranks_on_ties_infinities_and_nans():
    """robcurve.stats.rankdata (numpy only, so a summary needs no scipy.stats) gives scipy's numbers exactly."""
    import numpy as np
    import scipy.stats as ss

    from robcurve.stats import rankdata

    rng = np.random.default_rng(0)
    for _ in range(500):
        m, n = int(rng.integers(1, 5)), int(rng.integers(0, 12))
        a = rng.integers(0, 4, size=(m, n)).astype(float) + (rng.random((m, n)) if rng.random() < 0.5 else 0)
        a[rng.random((m, n)) < 0.15] = np.inf
        a[rng.random((m, n)) < 0.05] = -np.inf
        if rng.random() < 0.2:
            a[rng.random((m, n)) < 0.1] = np.nan
        for axis in (-1, 0):
            assert np.array_equal(rankdata(a, axis=axis), ss.rankdata(a, axis=axis), equal_nan=True)
    assert rankdata([3.0, 1.0, 3.0, np.inf]).tolist() == [2.5, 1.0, 2.5, 4.0]


def test_a_summary_does_not_import_scipy(tmp_path):
    """Issue 26: summarize's fixed cost; scipy.stats alone took ~0.7 s of it."""
    import subprocess
    import sys

    out = tmp_path / "run"
    _bench(out, "--n", "4", "--measurements", "clean,trajectory,travel", "--attack", "none")
    code = ("import sys; from robcurve.run.summary import summarize; summarize(sys.argv[1], plots_on=False); "
            "print('scipy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_config_sections_are_one_registry_shared_by_the_measurements():
    """Issue 23: sections in their own registry. The built-in ones are exactly RunConfig's typed section fields
    (the digest's top-level keys); a measurement module's own section is registered with it and lives under
    ``options``; measurements name the section they read, and shared ones are read by several."""
    from pydantic import BaseModel

    from robcurve.run.config import RunConfig
    from robcurve.run.measures import MEASUREMENTS
    from robcurve.run.sections import SECTIONS, builtin

    names = set(SECTIONS.names())
    fields = {n for n, f in RunConfig.model_fields.items()
              if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
    assert {n for n in names if builtin(n)} == fields
    own = {n for n in names if not builtin(n)}
    assert own == {"window", "ablation", "jumpout_adaptive", "layers"} and not own & set(RunConfig.model_fields)
    readers: dict[str, list[str]] = {}
    for m in MEASUREMENTS.names():
        sec = MEASUREMENTS.get(m).config
        if sec is not None:
            assert sec in names, (m, sec)
            readers.setdefault(sec, []).append(m)
    assert sorted(readers["pgd"]) == ["adv_calibration", "pgd"]
    cfg = RunConfig(measurements=["clean", "window"])
    assert cfg.section("window").model_dump() == SECTIONS.get("window")().model_dump()
    assert cfg.section("pgd") is cfg.pgd
