"""Run folders are never left half-written, wrongly deleted, or shared by two processes."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robcurve.cli import main
from robcurve.run.store import run_lock

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
OUTPUTS = ("entry.json", "summary.md", "summary.csv", "summary.json", "samples.csv", "reliability.png",
           "curvature_hist.png")


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()
            and not p.name.endswith(("-wal", "-shm"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("safe") / "run"
    assert main(["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out", str(out), "--no-progress", "--n", "4",
                 "--measurements", "clean,trajectory", "--attack", "none"]) == 0
    return out


def test_fresh_with_a_misspelt_model_leaves_the_run_byte_identical(finished, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    before = _hashes(d)
    rc = main(["bench", "--model", "zoo:vit-fmnsit", "--config", SMOKE, "--out", str(d), "--no-progress", "--n", "4",
               "--measurements", "clean,trajectory", "--attack", "none", "--fresh"])
    assert rc == 2 and "unknown zoo model" in capsys.readouterr().err
    assert _hashes(d) == before


def test_a_failed_new_run_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["bench", "--model", "zoo:nope", "--config", SMOKE, "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()


def test_a_second_process_on_the_same_folder_is_refused(finished, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    with run_lock(d):
        rc = main(["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out", str(d), "--no-progress", "--n", "4",
                   "--measurements", "clean,trajectory", "--attack", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and "in use by another robcurve process (pid" in err
    # released: the same command now runs (and reuses every row)
    assert main(["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out", str(d), "--no-progress", "--n", "4",
                 "--measurements", "clean,trajectory", "--attack", "none"]) == 0
    assert "0 sample-measurements computed" in capsys.readouterr().out


SLOW_WRITER = """
import sys, time
import robcurve.run.store as st
import robcurve.run.summary as sm
orig = st.atomic_write_bytes
def slow(path, data):
    orig(path, data)
    print("wrote", path.name, flush=True)
    time.sleep(0.4)
sm.atomic_write_bytes = slow
sm.atomic_write_text = lambda p, t: slow(p, t.encode())
sm.summarize(sys.argv[1])
"""


@pytest.mark.slow
def test_sigkill_while_writing_outputs_leaves_old_or_new_files_and_resumes(finished, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    old = {n: (d / n).read_bytes() for n in OUTPUTS}
    con = sqlite3.connect(str(d / "results.sqlite"))  # change the results so that new outputs differ from old
    s, v = con.execute("SELECT sample, value FROM results WHERE measurement='clean' AND sample=0").fetchone()
    val = json.loads(v)
    val["conf"] = round(val["conf"] * 0.9, 6)
    con.execute("UPDATE results SET value=? WHERE sample=0 AND measurement='clean'", (json.dumps(val, sort_keys=True),))
    con.commit()
    con.close()
    ref = tmp_path / "ref"
    shutil.copytree(d, ref)
    assert main(["summarize", str(ref)]) == 0
    new = {n: (ref / n).read_bytes() for n in OUTPUTS}
    p = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(d)], stdout=subprocess.PIPE, text=True)
    written = 0
    t0 = time.time()
    while written < 5 and time.time() - t0 < 120:  # the plots, then summary.md and summary.csv
        line = p.stdout.readline()
        if line.startswith("wrote"):
            written += 1
    p.send_signal(signal.SIGKILL)
    p.wait()
    states = {n: ("old" if (d / n).read_bytes() == old[n] else "new" if (d / n).read_bytes() == new[n] else "torn")
              for n in OUTPUTS}
    assert "torn" not in states.values(), states
    assert "new" in states.values() and "old" in states.values(), states  # killed midway through
    assert main(["summarize", str(d)]) == 0
    assert all((d / n).read_bytes() == new[n] for n in OUTPUTS)
