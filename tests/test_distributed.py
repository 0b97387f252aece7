"""Sharded runs: 2 gloo processes under torchrun give the single-process store row for row, and resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robcurve.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
# (torchrun's own parser takes abbreviations such as --n for its options: use --set for n)
ARGS = ["bench", "--model", "zoo:resnet-fmnist", "--config", SMOKE, "--no-progress", "--set", "n=6", "--set",
        "batch_size=2", "--measurements", "clean,trajectory", "--attack", "none"]


def _rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(str(db))
    rows = con.execute("SELECT sample, split_index, measurement, label, value FROM results "
                       "ORDER BY measurement, sample").fetchall()
    con.close()
    return rows


def _torchrun(out: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "robcurve.cli", *ARGS, "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_row_for_row(single, tmp_path):
    out = tmp_path / "sharded"
    p = _torchrun(out)
    so, se = p.communicate(timeout=600)
    assert p.returncode == 0, se[-2000:]
    assert sorted(x.name for x in (out / "shards").iterdir() if x.suffix == ".sqlite") == ["rank0-of-2.sqlite",
                                                                                            "rank1-of-2.sqlite"]
    assert _rows(out / "results.sqlite") == _rows(single / "results.sqlite")
    import json

    a, b = json.loads((out / "entry.json").read_text()), json.loads((single / "entry.json").read_text())
    for e in (a, b):
        e["robcurve"].pop("compute_s")  # wall-clock seconds differ; every number does not
    assert a == b


@pytest.mark.slow
def test_killed_ranks_resume_to_the_same_result(single, tmp_path):
    out = tmp_path / "killed"
    p = _torchrun(out)
    shard1 = out / "shards" / "rank1-of-2.sqlite"
    t0 = time.time()
    n = 0
    while time.time() - t0 < 300 and p.poll() is None:
        if shard1.exists():
            try:
                con = sqlite3.connect(str(shard1), timeout=1)
                n = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                con.close()
            except sqlite3.Error:
                n = 0
            if n >= 2:
                break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert 0 < n and not (out / "entry.json").exists(), "the kill came too late to test a resume"
    p2 = _torchrun(out)
    so, se = p2.communicate(timeout=600)
    assert p2.returncode == 0, se[-2000:]
    assert _rows(out / "results.sqlite") == _rows(single / "results.sqlite")
