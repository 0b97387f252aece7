"""`robcurve bench`: summary numbers equal the API's, a killed run resumes to the same rows,
bad configs get one clear line."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import robcurve
from robcurve.cli import main
from robcurve.run.results import metric_value

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def model_spec():
    """The shipped zoo ViT (trained, 88% accuracy): no training in the tests."""
    return "zoo:vit-fmnist"


def _rows(db):
    con = sqlite3.connect(str(db))
    rows = con.execute("SELECT sample, split_index, measurement, label, value FROM results ORDER BY measurement, sample").fetchall()
    con.close()
    return rows


def test_summary_equals_api(model_spec, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "--model", model_spec, "--attack", "pgd", "--config", SMOKE, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "clean_acc" in printed and "curvedness_median" in printed
    entry = json.loads((out / "entry.json").read_text())
    rows = entry["robcurve"]["metrics"]

    class _M(dict):
        def __getitem__(self, k):
            return metric_value(rows, k)

    m = _M()
    cfg = robcurve.load_config(SMOKE)
    model = robcurve.load_model(model_spec)
    data = robcurve.load_dataset("fashion-mnist-embedded", n=cfg.n, seed=cfg.seed)
    with torch.no_grad():
        logits = model(data.images)
    correct = (logits.argmax(1) == data.labels).numpy()
    assert m["clean_acc"] == pytest.approx(correct.mean())
    assert entry["clean_acc"] == pytest.approx(round(100 * correct.mean(), 2))
    cal = robcurve.calibration(logits, data.labels, n_bins=15)
    assert m["ece"] == pytest.approx(cal.ece, abs=1e-6) and m["sece"] == pytest.approx(cal.sece, abs=1e-6)
    d = robcurve.get_direction(model, data.images, data.labels, kind="fgsm")
    traj = robcurve.trajectory(model, data.images, d, T=cfg.trajectory.T, E=cfg.trajectory.E, y=data.labels)
    cur = robcurve.curvature(traj, region="in-class", ladder=tuple(cfg.trajectory.ladder))
    cv = cur.curvedness.numpy()
    ok = correct.astype(bool) & ~cur.unresolved.numpy() & np.isfinite(cv)
    assert ok.sum() >= 3, "too few usable samples for the comparison to mean anything"
    assert m["curvedness_median"] == pytest.approx(float(np.median(cv[ok])), rel=1e-5, abs=1e-7)
    td = robcurve.travel_distance(model, data.images, data.labels, d, h=cfg.travel.h, tol=cfg.travel.tol,
                                  eps_max=cfg.travel.eps_max)
    eps = np.where(td.censored.numpy(), np.inf, td.eps.numpy())[correct.astype(bool)]
    assert m["travel_median"] == pytest.approx(float(np.median(eps)), rel=1e-5)
    # PGD: per batch, with the runner's batch seeds
    robust = []
    for s in range(0, cfg.n, cfg.batch_size):
        r = robcurve.pgd(model, data.images[s : s + cfg.batch_size], data.labels[s : s + cfg.batch_size], 0.1,
                         steps=cfg.pgd.steps, seed=cfg.seed * 1_000_003 + s)
        robust.append((r.clean_correct & ~r.success).numpy())
    assert m["pgd_robust_acc"] == pytest.approx(np.concatenate(robust).mean())
    for f in ("results.sqlite", "samples.csv", "summary.md", "curvature_hist.png", "reliability.png"):
        assert (out / f).is_file(), f
    # a second run of the same command reuses every stored row
    assert main(["bench", "--model", model_spec, "--attack", "pgd", "--config", SMOKE, "--out", str(out), "--no-progress"]) == 0
    assert "0 sample-measurements computed" in capsys.readouterr().out


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_rows(model_spec, tmp_path):
    args = [sys.executable, "-m", "robcurve.cli", "bench", "--model", model_spec, "--attack", "pgd", "--config", SMOKE,
            "--no-progress", "--batch-size", "2", "--out"]
    ref = tmp_path / "ref"
    subprocess.run([*args, str(ref)], check=True, capture_output=True)
    killed = tmp_path / "killed"
    p = subprocess.Popen([*args, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = killed / "results.sqlite"
    deadline = time.time() + 300
    n_rows = 0
    while time.time() < deadline and p.poll() is None:
        if db.exists():
            try:
                con = sqlite3.connect(str(db), timeout=1)
                n_rows = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                con.close()
            except sqlite3.Error:
                n_rows = 0
            if n_rows >= 10:
                break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    total = len(_rows(ref / "results.sqlite"))
    assert 0 < n_rows < total, f"kill came at {n_rows} of {total} rows"
    r = subprocess.run([*args, str(killed)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "reused" in r.stdout
    assert _rows(killed / "results.sqlite") == _rows(ref / "results.sqlite")


BAD = [
    ("unknown_key.yaml", "n: 10\nbogus_field: 3\n", "bogus_field: unknown field"),
    ("wrong_type.yaml", "n: ten\n", "n: Input should be a valid integer"),
    ("negative_budget.yaml", "pgd: {eps: -0.1}\n", "pgd.eps: Input should be greater than 0"),
    ("bad_yaml.yaml", "n: [1, 2\nseed: 0\n", "bad YAML"),
    ("bad_choice.yaml", "attack: fgsm\n", "unknown attack 'fgsm'"),
    ("unknown_model.yaml", "model: vit_smal\nn: 2\n", "unknown model 'vit_smal'"),
]


@pytest.mark.parametrize("fname,text,needle", BAD)
def test_bad_configs_one_clear_line(tmp_path, capsys, fname, text, needle):
    cfgp = tmp_path / fname
    cfgp.write_text(text)
    rc = main(["bench", "--config", str(cfgp), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip() and "resolved to" not in ln]
    assert len(lines) == 1 and lines[0].startswith("robcurve: error:"), err
    assert needle in lines[0]


def test_bad_flag_values_and_changed_config(model_spec, tmp_path, capsys):
    assert main(["bench", "--n", "-3", "--no-progress"]) == 2
    assert "n: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main(["bench", "--set", "pgd.steps=0", "--no-progress"]) == 2
    assert "pgd.steps" in capsys.readouterr().err
    out = tmp_path / "run"
    base = ["bench", "--model", model_spec, "--config", SMOKE, "--out", str(out), "--no-progress", "--set", "n=2",
            "--measurements", "clean", "--attack", "none"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base[:-2], "--attack", "pgd"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "--fresh" in err
    assert main([*base[:-2], "--attack", "pgd", "--fresh"]) == 0
    # a changed performance setting only (a run stored before the window's chunk default became 64): the fix names
    # the stored value, and with it the run resumes
    win = ["bench", "--model", model_spec, "--config", SMOKE, "--out", str(tmp_path / "win"), "--no-progress",
           "--set", "n=2", "--measurements", "clean,window", "--attack", "none", "--no-plots"]
    assert main([*win, "--set", "window.chunk_size=2048"]) == 0
    capsys.readouterr()
    assert main(win) == 2
    err = capsys.readouterr().err
    assert "changed: options.window.chunk_size)" in err and "add --set window.chunk_size=2048;" in err
    assert main([*win, "--set", "window.chunk_size=2048"]) == 0


def test_subprocess_error_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "robcurve.cli", "bench", "--model", "zoo:nope", "--n", "2", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown zoo model 'nope'" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_attack_backend_flag_runs_the_peer_library(model_spec, tmp_path, capsys):
    """--attack-backend foolbox runs foolbox's DeepFool; its median L2 agrees with ours within 1%."""
    meds = {}
    for backend in ("robcurve", "foolbox"):
        out = tmp_path / backend
        assert main(["bench", "--model", model_spec, "--attack", "deepfool", "--attack-backend", backend, "--config", SMOKE,
                     "--measurements", "clean", "--out", str(out), "--no-progress"]) == 0
        e = json.loads((out / "entry.json").read_text())
        assert e["robcurve"]["config"]["attack_backend"] == backend
        meds[backend] = metric_value(e["robcurve"]["metrics"], "deepfool_l2_median")
    capsys.readouterr()
    assert meds["robcurve"] == pytest.approx(meds["foolbox"], rel=0.01)
