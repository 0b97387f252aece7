"""Third-party plugins through entry points (issue 23): a tiny distribution on sys.path adds a model
source and a metric without touching robcurve; a broken plugin is reported and does not break others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")

TOY = '''
import torch
from robcurve.models.wrapper import ModelInfo, RobcurveModel


def load_toy(name, **request):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    info = ModelInfo(spec=f"toy:{name}", source="toy", name=name, family="mlp", dataset="fashion-mnist",
                     num_classes=10, input_size=(1, 28, 28))
    return RobcurveModel(net, [0.286], [0.353], info=info)
'''
METRIC = '''
import numpy as np
from robcurve.run.metrics import metric

metric("toy_top_confidence", "clean", "the largest clean confidence of the run", "fraction", "none", "mean_only",
       lambda i: {"": (np.array([i.conf.max()]),)})
'''


def _install(site: Path, broken: bool = False) -> dict[str, str]:
    pkg = site / "robcurve_toy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(TOY)
    (pkg / "metric.py").write_text(METRIC)
    info = site / "robcurve_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: robcurve-toy\nVersion: 0.1\n")
    eps = "[robcurve.models]\ntoy = robcurve_toy:load_toy\nzoo = robcurve_toy:load_toy\n[robcurve.metrics]\ntoy_metric = robcurve_toy.metric\n"
    if broken:
        eps += "[robcurve.measurements]\nbroken = robcurve_toy_missing_module\n"
    (info / "entry_points.txt").write_text(eps)
    return {**os.environ, "PYTHONPATH": str(site), "ROBCURVE_DEBUG": ""}


def _run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robcurve", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def test_a_plugin_package_adds_a_model_source_and_a_metric(tmp_path):
    env = _install(tmp_path / "site", broken=True)
    r = _run(env, "bench", "--model", "toy:tiny", "--config", SMOKE, "--out", str(tmp_path / "run"), "--set", "n=4",
             "--set", "summary.bootstrap=0", "--measurements", "clean", "--attack", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "toy_top_confidence" in (tmp_path / "run" / "summary.md").read_text()
    # the broken plugin and the clash with the built-in zoo source are named, on one line each, and nothing breaks
    assert "plugin 'broken' (robcurve.measurements, robcurve-toy 0.1) failed: " in r.stderr
    assert "plugin 'zoo' (robcurve.models, robcurve-toy 0.1) refused: model source 'zoo' is already provided by " \
           "robcurve (built-in)" in r.stderr
    assert "Traceback" not in r.stderr
    listing = _run(env, "plugins", cwd=tmp_path)
    assert listing.returncode == 0
    assert "robcurve.models" in listing.stdout and "robcurve-toy 0.1" in listing.stdout and "lazy" in listing.stdout


def test_plugins_option_imports_a_module_for_quick_experiments(tmp_path):
    (tmp_path / "my_metric.py").write_text(METRIC.replace("toy_top_confidence", "quick_top_confidence"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = _run(env, "--plugins", "my_metric", "bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out",
             str(tmp_path / "run"), "--set", "n=2", "--set", "summary.bootstrap=0", "--measurements", "clean",
             "--attack", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "quick_top_confidence" in (tmp_path / "run" / "summary.md").read_text()


MEASUREMENT_FILE = '''
"""A measurement in one file: its config section, run function, figure, re-check rule and metric."""
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from robcurve.run.measures import Measurement, batched_logits, register_measurement
from robcurve.run.metrics import metric


class MarginCfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0)


def run_margin(ctx, start, x, y, split_idx):
    top2 = batched_logits(ctx.model, x).topk(2, dim=1).values
    s = ctx.cfg.section("margin").scale
    return [{"margin": float(s * (top2[i, 0] - top2[i, 1]))} for i in range(len(y))]


def plot_margin(summary, out):
    (out / "margin.txt").write_text(str(len(summary["frames"]["margin"])))
    return ["margin.txt"]


register_measurement(Measurement("margin", run_margin, "logit margin of the top two classes", order=90, config="margin",
                                 config_model=MarginCfg, plot=plot_margin, recheck="sample"))
metric("margin_median", "margin", "median top-2 logit margin", "logit", "higher", "median",
       lambda i: {"": (i.col("margin", "margin"),)}, leaderboard=True)
'''


def test_a_measurement_in_one_new_file_reaches_config_run_summary_entry_and_submit(tmp_path):
    """Issue 23: adding a measurement is one file. Loaded with --plugins, its section is read from the config,
    it is run, summarised (rows, figure), written into entry.json as a leaderboard column, and re-measured by
    submit. (A bad value of a plugin's section is refused with the field named: test_metrics' toy test.)"""
    import json

    (tmp_path / "margin_measure.py").write_text(MEASUREMENT_FILE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ROBCURVE_DEBUG": ""}
    plug = ("--plugins", "margin_measure")
    common = ("bench", "--model", "zoo:resnet-fmnist", "--config", SMOKE, "--set", "n=6", "--set", "batch_size=3",
              "--set", "summary.bootstrap=0", "--measurements", "clean,margin", "--attack", "none")
    run = tmp_path / "run"
    r = _run(env, *plug, *common, "--out", str(run), "--set", "margin.scale=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "margin_median" in (run / "summary.md").read_text() and "margin.txt" in (run / "summary.md").read_text()
    assert (run / "margin.txt").read_text() == "6"
    e = json.loads((run / "entry.json").read_text())
    row = next(m for m in e["robcurve"]["metrics"] if m["metric"] == "margin_median")
    assert row["value"] > 0 and row["n"] == 6 and e["robcurve"]["config"]["options"]["margin"] == {"scale": 2.0}
    # the model's own logits: the stored margins are 2 x (top1 - top2) of a plain forward
    import robcurve

    model = robcurve.load_model("zoo:resnet-fmnist")
    data = robcurve.load_dataset("fashion-mnist-embedded", n=6, seed=0)
    top2 = model(data.images).topk(2, dim=1).values.detach()
    want = (2 * (top2[:, 0] - top2[:, 1])).double().numpy()
    assert row["value"] == pytest.approx(float(np.median(want)), rel=1e-5)
    # submit re-measures it per sample (its recheck rule) and the entry verifies
    root = tmp_path / "lb"
    s = _run(env, *plug, "submit", str(run), "--root", str(root), "--seed", "1", "--verify-n", "3", cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    entry = next(root.rglob("*.json"))
    ver = json.loads(entry.read_text())["robcurve"]["verification"]
    assert "margin" in ver["measurements"] and ver["mismatches"] == 0 and len(ver["samples"]) == 3
