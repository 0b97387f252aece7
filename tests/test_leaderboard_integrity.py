"""Leaderboard integrity (issue 21) and trust (issue 22): what verify proves, no silent overwrite,
atomic submissions, inert exports, incomplete runs, stable digests, one protocol per board."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robcurve.cli import main
from robcurve.leaderboard import integrity
from robcurve.leaderboard.io import load_entries, read_entry
from robcurve.leaderboard.render import csv_text, latex, md_escape, render_all, text_table, tidy

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
BOARD = ROOT / "leaderboards" / "fashion-mnist" / "Linf"


def _bench(out: Path, model: str = "zoo:vit-fmnist", *extra: str) -> Path:
    assert main(["bench", "--model", model, "--config", SMOKE, "--out", str(out), "--no-progress", "--set", "n=4",
                 "--set", "summary.bootstrap=0", "--measurements", "clean", "--attack", "none", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    return _bench(tmp_path_factory.mktemp("ra") / "run")


@pytest.fixture(scope="module")
def run_b(tmp_path_factory) -> Path:
    return _bench(tmp_path_factory.mktemp("rb") / "run", "zoo:resnet-fmnist")


def _copy_shipped(root: Path, entry_id: str = "zoo-vit-fmnist") -> Path:
    d = root / "fashion-mnist" / "Linf"
    d.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".samples.jsonl.gz"):
        shutil.copy(BOARD / f"{entry_id}{suffix}", d / f"{entry_id}{suffix}")
    return d / f"{entry_id}.json"


# -- verify covers every field; ranking reads only verified numbers ---------------------------------
def test_shipped_entry_verifies_without_its_model(capsys):
    assert main(["leaderboard", "verify", str(BOARD / "zoo-vit-fmnist.json"), "--no-remeasure"]) == 0
    assert "OK" in capsys.readouterr().out


def test_one_shipped_entry_verifies_by_remeasurement(capsys):
    assert main(["leaderboard", "verify", str(BOARD / "zoo-resnet-fmnist-3.json"), "--n", "2", "--seed", "1"]) == 0
    assert "re-measured 2 samples" in capsys.readouterr().out


@pytest.mark.slow
def test_every_shipped_entry_verifies_by_remeasurement(capsys):
    assert main(["leaderboard", "verify", "--all", "--root", str(ROOT / "leaderboards"), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == len(list(BOARD.glob("*.json"))) and "FAIL" not in out


def test_forged_ranking_field_is_listed_unverified_and_never_ranked_first(tmp_path):
    root = tmp_path / "lb"
    p = _copy_shipped(root)
    _copy_shipped(root, "zoo-resnet-fmnist")
    df = tidy(load_entries(root))
    assert set(df["status"]) == {"verified"}
    d = json.loads(p.read_text())
    d["autoattack_acc"] = 99.9  # would rank first by RobustBench's rule
    p.write_text(json.dumps(d))
    df = tidy(load_entries(root))
    forged = df[df["id"] == "zoo-vit-fmnist"].iloc[0]
    assert forged["status"] == "unverified" and forged["rank"] == 2
    assert "(unverified)" in text_table(df)


def test_content_digest_ignores_free_text_only():
    d = json.loads((BOARD / "zoo-vit-fmnist.json").read_text())
    cd = integrity.content_digest(d)
    assert cd == d["robcurve"]["verification"]["content_digest"]
    for k in integrity.FREE_TEXT:
        assert integrity.content_digest({**d, k: "changed"}) == cd
    for k, v in (("clean_acc", 1.0), ("dataset", "cifar10"), ("threat_model", "L2"), ("eps", 0.2)):
        assert integrity.content_digest({**d, k: v}) != cd


# -- no silent overwrite; concurrent submits; atomic pairs ----------------------------------------
def test_submit_refuses_existing_id_and_replace_keeps_history(run_a, tmp_path, capsys):
    root = tmp_path / "lb"
    assert main(["submit", str(run_a), "--root", str(root), "--id", "good", "--seed", "0", "--verify-n", "2"]) == 0
    p = root / "fashion-mnist" / "Linf" / "good.json"
    first = p.read_bytes()
    capsys.readouterr()
    assert main(["submit", str(run_a), "--root", str(root), "--id", "good", "--seed", "0", "--verify-n", "2"]) == 2
    assert "already holds an entry 'good'" in capsys.readouterr().err
    assert p.read_bytes() == first
    assert main(["submit", str(run_a), "--root", str(root), "--id", "good", "--seed", "1", "--verify-n", "2",
                 "--replace"]) == 0
    hist = [json.loads(ln) for ln in (root / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["id"] == "good" and hist[-1]["replaced_sha256"] == integrity.sha256_bytes(first)
    assert main(["leaderboard", "verify", str(p), "--no-remeasure"]) == 0


def test_same_weights_twice_are_refused(run_a, tmp_path, capsys):
    root = tmp_path / "lb"
    assert main(["submit", str(run_a), "--root", str(root), "--id", "a", "--seed", "0", "--verify-n", "1"]) == 0
    capsys.readouterr()
    assert main(["submit", str(run_a), "--root", str(root), "--id", "b", "--seed", "0", "--verify-n", "1"]) == 2
    assert "already on the board as 'a'" in capsys.readouterr().err


def test_two_concurrent_submits_never_drop_one_silently(run_a, tmp_path):
    root = tmp_path / "lb"
    cmd = [sys.executable, "-m", "robcurve", "submit", str(run_a), "--root", str(root), "--id", "same", "--seed", "0",
           "--verify-n", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in res)
    assert codes == [0, 2], res  # one kept, the other refused with a message
    refused = next(err for rc, err in res if rc == 2)
    assert "already holds an entry 'same'" in refused or "meanwhile" in refused
    assert "Traceback" not in refused
    assert (root / "fashion-mnist" / "Linf" / "same.json").is_file()


def test_interrupted_write_leaves_no_entry_without_samples(run_a, tmp_path, monkeypatch, capsys):
    root = tmp_path / "lb"
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append(Path(dst).name)
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(integrity.os, "replace", failing)
    assert main(["submit", str(run_a), "--root", str(root), "--id", "x", "--seed", "0", "--verify-n", "1"]) == 2
    assert calls[0].endswith(".samples.jsonl.gz")  # samples first, entry last
    assert not (root / "fashion-mnist" / "Linf" / "x.json").exists()
    assert any((root / ".staging").iterdir())  # the leftover staging folder...
    monkeypatch.setattr(integrity.os, "replace", real)
    capsys.readouterr()
    assert main(["submit", str(run_a), "--root", str(root), "--id", "x", "--seed", "0", "--verify-n", "1"]) == 0
    assert "removed 1 leftover staging folder" in capsys.readouterr().err  # ...is cleaned and reported
    assert not any((root / ".staging").iterdir())


def test_import_is_all_or_nothing(tmp_path, capsys):
    src = tmp_path / "rb" / "cifar10" / "Linf"
    src.mkdir(parents=True)
    for i in range(50):
        rec = {"name": f"M{i}", "clean_acc": "90", "autoattack_acc": "50", "eps": "8/255"}
        if i == 25:
            rec["clean_acc"] = "190"  # invalid: a percentage above 100
        (src / f"M{i:02d}.json").write_text(json.dumps(rec))
    root = tmp_path / "lb"
    assert main(["leaderboard", "import", str(tmp_path / "rb"), "--root", str(root)]) == 2
    assert "M25.json" in capsys.readouterr().err
    assert not list(root.rglob("*.json"))  # nothing imported
    (src / "M25.json").unlink()
    assert main(["leaderboard", "import", str(tmp_path / "rb"), "--root", str(root)]) == 0
    e = read_entry(root / "cifar10" / "Linf" / "M00.json")
    assert e.source == "robustbench" and len(e.source_sha256) == 64 and e.status() == "imported"


# -- inert exports in every format -----------------------------------------------------------------
HOSTILE = "<script>alert(1)</script> | =HYPERLINK(\"http://x\") `code` \n# heading <img src=x onerror=alert(1)>"


def test_hostile_strings_are_inert_in_every_format(tmp_path):
    from test_leaderboard import _synthetic

    root = tmp_path / "lb"
    d = root / "fashion-mnist" / "Linf"
    d.mkdir(parents=True)
    e = _synthetic(1, 0.2, 0.05, "cnn")
    e["robcurve"]["model"]["family"] = "=cmd|' /C calc'!A0"
    e["robcurve"]["metrics"][0]["condition"] = HOSTILE
    e["id"] = "evil"
    e["name"] = HOSTILE
    from test_leaderboard import signed

    (d / "evil.json").write_text(json.dumps(signed(e)))
    entries = load_entries(root)
    df = tidy(entries)
    md = text_table(df)
    for line in md.splitlines():
        assert line.count("|") == md.splitlines()[0].count("|")  # no extra cells: a | in a value is &#124;
    assert "<script>" not in md and "<img" not in md and "`" not in md
    assert md_escape("a|b\nc") == "a&#124;b c"
    rows = list(csv.reader(io.StringIO(csv_text(df))))
    fam = rows[0].index("family")
    assert rows[1][fam].startswith("'=")  # OWASP: a formula is shown as text
    assert not any(cell[:1] in "=+@" for row in rows[1:] for cell in row if cell and not cell[0].isdigit())
    tex = latex(df)
    assert "\\begin{tabular}" in tex and "\\#" in tex  # LaTeX escapes its own specials (ids only are printed)
    render_all(entries, root)
    readme = (root / "README.md").read_text()
    assert "<script>" not in readme and "<img" not in readme
    page = (root / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    json.loads(df.to_json(orient="records"))


# -- summarize says when a run is incomplete -------------------------------------------------------
def _edited_copy(run: Path, tmp_path: Path, sql: str) -> Path:
    """A copy of a finished run folder whose store had ``sql`` applied."""
    d = tmp_path / "run"
    shutil.copytree(run, d)
    con = sqlite3.connect(str(d / "results.sqlite"))
    con.execute(sql)
    con.commit()
    con.close()
    return d


def test_summarize_refuses_incomplete_run_and_partial_marks_it(run_a, tmp_path, capsys):
    d = _edited_copy(run_a, tmp_path, "DELETE FROM results WHERE sample IN (2, 3)")
    capsys.readouterr()
    assert main(["summarize", str(d)]) == 2
    assert "incomplete: 1 measurement(s) incomplete (clean 2/4 samples stored)" in capsys.readouterr().err
    assert main(["summarize", str(d), "--partial"]) == 0
    assert (d / "summary.md").read_text().startswith("**INCOMPLETE RUN")
    assert not (d / "entry.json").exists()


# -- digests survive new config fields; one protocol per board -------------------------------------
def test_new_config_field_at_its_default_keeps_old_digests(monkeypatch):
    from robcurve.run import config as C

    stored = json.loads((BOARD / "zoo-vit-fmnist.json").read_text())["robcurve"]
    assert C.config_digest(stored["config"]) == stored["config_digest"]
    cfg = C.RunConfig.model_validate(stored["config"])
    assert cfg.digest() == stored["config_digest"]  # current fields (autocast ...) at their defaults
    defaults = {**C.RunConfig().model_dump(), "new_option": 3, "pgd": {**C.RunConfig().model_dump()["pgd"], "new_knob": 1}}
    monkeypatch.setattr(C, "_DEFAULTS", defaults)
    dump = {**stored["config"], "new_option": 3, "pgd": {**stored["config"]["pgd"], "new_knob": 1}}
    assert C.config_digest(dump) == stored["config_digest"]
    assert C.config_digest({**dump, "new_option": 4}) != stored["config_digest"]
    assert C.config_digest({**dump, "pgd": {**dump["pgd"], "new_knob": 2}}) != stored["config_digest"]
    assert C.config_digest({**dump, "device": "cuda", "threads": 7}) == stored["config_digest"]  # machine settings


def test_window_chunk_is_a_performance_setting_outside_the_protocol():
    """The window's chunk (64 by default since issue 26; the shipped entries ran 2048) changes float rounding at
    most: the board's protocol digest ignores it (its value in protocol.yaml still matches both), the run digest
    does not (two chunk sizes are two computations), and a board entry with either chunk differs in no protocol
    field."""
    from robcurve.leaderboard.submit import protocol_differences, protocol_digest
    from robcurve.run.config import load_config

    proto = yaml.safe_load((BOARD / "protocol.yaml").read_text())
    new = load_config(ROOT / "configs" / "leaderboard-fmnist.yaml")
    old = load_config(ROOT / "configs" / "leaderboard-fmnist.yaml", {"window": {"chunk_size": 2048}})
    assert new.section("window").chunk_size == 64 and old.section("window").chunk_size == 2048
    assert protocol_digest(new.model_dump()) == protocol_digest(old.model_dump()) == proto["digest"]
    assert new.digest() != old.digest()
    stored = json.loads((BOARD / "zoo-vit-fmnist.json").read_text())["robcurve"]
    assert stored["config"]["options"]["window"]["chunk_size"] == 2048
    assert protocol_differences(new.model_dump(), old.model_dump()) == []
    other = load_config(ROOT / "configs" / "leaderboard-fmnist.yaml", {"window": {"points": 21}})
    assert protocol_differences(other.model_dump(), old.model_dump()) == ["options.window.points (21 here, 41 on the board)"]
    assert protocol_digest(other.model_dump()) != proto["digest"]


def test_board_protocol_refuses_another_config_before_measuring(run_a, tmp_path, capsys):
    root = tmp_path / "lb"
    (root / "fashion-mnist" / "Linf").mkdir(parents=True)
    shutil.copy(BOARD / "protocol.yaml", root / "fashion-mnist" / "Linf" / "protocol.yaml")
    assert main(["submit", str(run_a), "--root", str(root), "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert "not made with this board's protocol (configs/leaderboard-fmnist.yaml" in err and "differs in" in err
    assert "n (4 here, 100 on the board)" in err


def test_below_chance_needs_a_flag_and_is_marked(tmp_path, capsys):
    from robcurve.zoo import ZOO_DIR, card

    init = card("vit-fmnist")["series"][0]  # epoch 0: the initialisation, at chance
    assert init["epoch"] == 0
    run = tmp_path / "run"
    assert main(["bench", "--model", "zoo:vit-fmnist@0", "--config", SMOKE, "--out", str(run), "--no-progress",
                 "--set", "n=12", "--set", "summary.bootstrap=0", "--measurements", "clean", "--attack", "none"]) == 0
    acc = json.loads((run / "entry.json").read_text())["clean_acc"]
    assert acc <= 10.0, "the fixture needs a model at or below chance"
    root = tmp_path / "lb"
    capsys.readouterr()
    assert main(["submit", str(run), "--root", str(root), "--seed", "0", "--verify-n", "1"]) == 2
    assert "at or below chance (10.0%)" in capsys.readouterr().err
    assert main(["submit", str(run), "--root", str(root), "--seed", "0", "--verify-n", "1", "--allow-below-chance"]) == 0
    e = read_entry(next((root / "fashion-mnist" / "Linf").glob("*.json")))
    assert e.robcurve.flags == ["below-chance"]
    df = tidy(load_entries(root))
    assert df.iloc[0]["flags"] == "below-chance"
    assert ZOO_DIR.is_dir()


# -- value() cannot mislead ---------------------------------------------------------------------------
def test_run_value_raises_on_unknown_and_ambiguous_metrics(tmp_path):
    import robcurve
    from robcurve.errors import RobcurveError

    out = tmp_path / "run"
    assert main(["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out", str(out), "--no-progress",
                 "--set", "n=4", "--set", "summary.bootstrap=0", "--measurements", "clean,corruptions",
                 "--attack", "none", "--set", "calibration.corruptions=[contrast, fog]"]) == 0
    r = robcurve.load_run(out)
    with pytest.raises(RobcurveError, match="did you mean corruption_acc"):
        r.value("corruption_accc")
    with pytest.raises(RobcurveError, match="reported under 3 conditions: 'contrast:3', 'fog:3', 'mean'"):
        r.value("corruption_acc")
    mean = r.value("corruption_acc", condition="mean")
    assert mean == pytest.approx((r.value("corruption_acc", condition="contrast:3")
                                  + r.value("corruption_acc", condition="fog:3")) / 2)
    with pytest.raises(RobcurveError, match="no condition 'snow:3'"):
        r.value("corruption_acc", condition="snow:3")
    assert r.value("clean_acc") == pytest.approx(r.row("clean_acc").value)


def test_normalisation_is_stated_and_overridable(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out", str(out), "--no-progress",
                 "--set", "n=4", "--set", "summary.bootstrap=0", "--measurements", "clean", "--attack", "none",
                 "--mean", "0.5", "--std", "0.25"]) == 0
    err = capsys.readouterr().err
    assert "normalisation mean [0.5] std [0.25] (--mean/--std" in err
    e = json.loads((out / "entry.json").read_text())
    assert e["robcurve"]["model"]["extra"]["normalisation"] == {"mean": [0.5], "std": [0.25],
                                                                 "from": "--mean/--std (config mean/std)"}
    assert e["robcurve"]["model"]["input_size"] == [1, 28, 28]


def test_class_count_mismatch_is_an_error(tmp_path, capsys):
    assert main(["bench", "--model", "timm:resnet18", "--weights", "random", "--model-kwargs", '{"in_chans": 1}',
                 "--config", SMOKE, "--out", str(tmp_path / "r"), "--no-progress", "--set", "n=2",
                 "--measurements", "clean", "--attack", "none"]) == 2
    assert "has 1000 classes but fashion-mnist-embedded has 10" in capsys.readouterr().err


# -- the population board (issue 25) ----------------------------------------------------------------
POP_BOARD = ROOT / "leaderboards" / "population"


def test_population_entries_verify_without_their_models(capsys):
    files = sorted((POP_BOARD / "fashion-mnist" / "Linf").glob("*.json"))
    if not files:
        pytest.skip("no population entries shipped yet")
    assert main(["leaderboard", "verify", "--all", "--no-remeasure", "--root", str(POP_BOARD)]) == 0
    assert capsys.readouterr().out.count("OK ") == len(files)


@pytest.mark.slow
def test_population_entries_verify_by_remeasurement(capsys):
    assert main(["leaderboard", "verify", "--all", "--n", "2", "--seed", "1", "--root", str(POP_BOARD)]) == 0
    assert "FAIL" not in capsys.readouterr().out


@pytest.mark.slow
def test_population_relations_state_power_partial_rho_and_the_mixed_model(tmp_path):
    import robcurve.leaderboard as lb
    from robcurve import acrossmodels as A

    copy = tmp_path / "pop"
    shutil.copytree(POP_BOARD, copy)
    entries = load_entries(copy)
    render_all(entries, copy)
    rel = json.loads((copy / "relations.json").read_text())["fashion-mnist/Linf"]
    n = len(entries)
    assert all(r["n"] == n and r["rho_critical"] == pytest.approx(A.critical_rho(n)) for r in rel["relations"])
    assert all("partial_rho" in r and "p_adj" in r for r in rel["relations"])
    mixed = rel["mixed_models"]
    assert mixed and mixed[0]["n_models"] == n and mixed[0]["lo"] < mixed[0]["coef"] < mixed[0]["hi"]
    assert {c["metric"] for c in rel["family_contrasts"]} >= {"headline_curvedness"}
    spread = rel["seed_spread"]
    assert {s["architecture"] for s in spread} >= {"pop-vit", "pop-resnet"}
    df = lb.load(root=copy)
    assert len(df) == n and df["status"].eq("verified").all()


def test_summarize_of_a_store_with_a_damaged_value_is_one_line(run_a, tmp_path, capsys):
    d = _edited_copy(run_a, tmp_path, "UPDATE results SET value='{not json' WHERE sample=1")
    capsys.readouterr()
    assert main(["summarize", str(d)]) == 2
    err = capsys.readouterr().err
    assert "holds a damaged row (clean of sample 1: not a JSON object)" in err and "Traceback" not in err


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    r = subprocess.run([sys.executable, "-m", "robcurve", "bench", "--model", "zoo:vit-fmnist", "--config", SMOKE,
                        "--out", str(tmp_path / "r"), "--set", "n=4", "--set", "batch_size=2", "--set",
                        "summary.bootstrap=0", "--measurements", "clean", "--attack", "none"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "robcurve: 4/4 samples (batch 2/2)" in r.stderr and "s left" in r.stderr


def test_load_has_fractions_numeric_intervals_and_typed_conditions():
    import robcurve.leaderboard as lb
    from robcurve.leaderboard.render import parse_condition

    assert parse_condition("E=0.1 step=0.001 in-class") == {"E": 0.1, "h": 0.001}
    assert parse_condition("Linf eps=0.1 PGD-10 ce robcurve") == {"eps": 0.1}
    assert parse_condition("fog:3") == {"corruption": "fog", "severity": 3}
    df = lb.load(root=ROOT / "leaderboards")
    assert (df["clean"] * 100 - df["clean_acc"]).abs().max() < 1e-9
    assert df["travel_median_lo"].dtype.kind == "f" and df["pgd_robust_acc_eps"].dropna().eq(0.1).all()
    assert df["curvedness_median_h"].dropna().eq(0.001).all() and df["curvedness_median_E"].dropna().eq(0.1).all()
