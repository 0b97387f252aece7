"""The leaderboard: RobustBench-format entries, verified submissions, refusals, relations, rendered pages.

The HTML page is checked in a real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium); that test is skipped, saying so, where no browser is installed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from robcurve.cli import main
from robcurve.errors import RobcurveError
from robcurve.leaderboard.integrity import content_digest
from robcurve.leaderboard.io import entry_path, load_entries, read_entry
from robcurve.leaderboard.render import relations, render_all, tidy
from robcurve.leaderboard.schema import Entry

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FIXTURES = ROOT / "tests" / "fixtures" / "robustbench"


# -- schema and import ------------------------------------------------------------------------------
def test_robustbench_files_round_trip_with_string_numbers_fractions_and_nulls(tmp_path):
    e = read_entry(FIXTURES / "cifar10" / "Linf" / "Example2024Wide.json")
    assert e.clean_acc == 91.23 and e.autoattack_acc == 65.87 and e.reported == 66.10 and e.external == 66.02
    assert e.eps == pytest.approx(8 / 255) and e.footnote is None and e.additional_data is True
    assert e.robust_acc() == (65.87, "AutoAttack")
    small = read_entry(FIXTURES / "cifar10" / "Linf" / "Example2023Small.json")
    assert small.reported is None and small.footnote == "Trained with extra care."
    c = read_entry(FIXTURES / "cifar10" / "corruptions" / "Example2022Aug.json")
    assert c.eps is None and c.corruptions_acc == 87.25 and c.robust_acc() == (87.25, "corruptions")
    again = Entry.model_validate(json.loads(e.model_dump_json()))
    assert again == e
    # import through the CLI: RobustBench's folder layout gives dataset and threat model
    root = tmp_path / "lb"
    assert main(["leaderboard", "import", str(FIXTURES), "--root", str(root)]) == 0
    entries = load_entries(root)
    assert len(entries) == 3 and all(x.imported and x.robcurve is None for x in entries)
    df = tidy(entries)
    lin = df[df["threat_model"] == "Linf"]
    assert list(lin["id"]) == ["Example2024Wide", "Example2023Small"]  # ranked by robust accuracy
    assert lin["curvedness_median"].isna().all()


@pytest.mark.parametrize("change,needle", [
    ({"threat_model": "Linf3"}, "unknown threat model 'Linf3'"),
    ({"clean_acc": "ninety"}, "clean_acc: Value error, clean_acc must be a number"),
    ({"clean_acc": "101"}, "percentage in [0, 100]"),
    ({"name": None}, "name:"),
    ({"id": "../../escape"}, "not a safe file name"),
])
def test_bad_entries_are_refused_with_their_reason(tmp_path, change, needle):
    data = json.loads((FIXTURES / "cifar10" / "Linf" / "Example2024Wide.json").read_text())
    data.update(change)
    if change.get("name", "x") is None:
        del data["name"]
    p = tmp_path / "e.json"
    p.write_text(json.dumps(data))
    with pytest.raises(RobcurveError) as ei:
        read_entry(p)
    assert needle in str(ei.value)


def test_entry_paths_cannot_escape_the_folder(tmp_path):
    for bad in ("../x", "a/b", "..", ".hidden", "x/../../y", ""):
        with pytest.raises(RobcurveError, match="safe"):
            entry_path(tmp_path, "fashion-mnist", "Linf", bad)
    assert entry_path(tmp_path, "fashion-mnist", "Linf", "ok-name_1.2").parent == tmp_path / "fashion-mnist" / "Linf"


# -- submissions ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sub") / "run"
    assert main(["bench", "--model", "zoo:resnet-fmnist", "--config", SMOKE, "--out", str(out), "--no-progress",
                 "--n", "6", "--batch-size", "3", "--measurements", "clean,trajectory,travel", "--attack", "pgd"]) == 0
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    return d


def test_submit_verifies_and_writes_an_entry_a_maintainer_can_verify(run_dir, tmp_path, capsys):
    root = tmp_path / "lb"
    assert main(["submit", str(run_dir), "--root", str(root), "--seed", "3", "--verify-n", "4"]) == 0
    out = capsys.readouterr().out
    assert "verified: re-measured 4 samples (seed 3)" in out and "git add" in out
    p = root / "fashion-mnist" / "Linf" / "zoo-resnet-fmnist.json"
    e = read_entry(p)
    assert e.reported is None and e.autoattack_acc is None  # RobustBench's meaning: not our PGD number
    v = e.robcurve.verification
    assert v.mismatches == 0 and v.compared > 100 and "pgd" in v.measurements
    assert "/" not in (e.robcurve.model.get("weights") or "")  # no machine paths
    assert main(["leaderboard", "verify", str(p), "--seed", "5", "--n", "3"]) == 0
    assert "OK" in capsys.readouterr().out
    # tampered numbers in the submitted entry are caught against its per-sample results
    data = json.loads(p.read_text())
    row = next(r for r in data["robcurve"]["metrics"] if r["metric"] == "travel_median")
    row["value"] *= 1.5
    p.write_text(json.dumps(data))
    assert main(["leaderboard", "verify", str(p)]) == 2
    assert "tampered" in capsys.readouterr().err


@pytest.mark.slow
def test_tampered_run_is_refused(run_dir, tmp_path, capsys):
    d = _copy(run_dir, tmp_path)
    e = json.loads((d / "entry.json").read_text())
    e["robcurve"]["metrics"][0]["value"] = 0.999
    (d / "entry.json").write_text(json.dumps(e))
    assert main(["submit", str(d), "--root", str(tmp_path / "lb"), "--seed", "0"]) == 2
    assert "tampered or stale" in capsys.readouterr().err
    # tampered per-sample values (the store itself) fail the re-measurement
    d2 = tmp_path / "run2"
    shutil.copytree(run_dir, d2)
    (d2 / "entry.json").unlink()
    con = sqlite3.connect(str(d2 / "results.sqlite"))
    for s, v in con.execute("SELECT sample, value FROM results WHERE measurement='travel'").fetchall():
        val = json.loads(v)
        if val.get("eps") is not None:
            val["eps"] = val["eps"] * 1.3 + 0.01
        con.execute("UPDATE results SET value=? WHERE sample=? AND measurement='travel'", (json.dumps(val), s))
    con.commit()
    con.close()
    assert main(["submit", str(d2), "--root", str(tmp_path / "lb"), "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert "verification failed" in err and "travel" in err
    assert not (tmp_path / "lb" / "fashion-mnist").exists()  # nothing written


def test_changed_config_and_escaping_name_are_refused(run_dir, tmp_path, capsys):
    d = _copy(run_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["trajectory"]["E"] = 0.05
    (d / "config.json").write_text(json.dumps(cfg))
    assert main(["submit", str(d), "--root", str(tmp_path / "lb"), "--seed", "0"]) == 2
    assert "changed config" in capsys.readouterr().err
    assert main(["submit", str(run_dir), "--root", str(tmp_path / "lb"), "--seed", "0", "--id", "../../../etc/x"]) == 2
    assert "not a safe file name" in capsys.readouterr().err
    assert not (tmp_path / "etc").exists()


@pytest.mark.slow
def test_changed_weights_are_refused(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    src = ROOT / "robcurve" / "zoo" / "weights" / "resnet-fmnist.safetensors"
    w = tmp_path / "net.safetensors"
    shutil.copy(src, w)
    (tmp_path / "net.json").write_text(json.dumps({"arch": "zoo:resnet", "mean": [0.2860], "std": [0.3530]}))
    out = tmp_path / "run"
    assert main(["bench", "--model", f"file:{w}", "--config", SMOKE, "--out", str(out), "--no-progress", "--n", "3",
                 "--measurements", "clean", "--attack", "none"]) == 0
    sd = load_file(str(w))
    k = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 10)
    sd[k] = sd[k] * 1.01
    save_file(sd, str(w))
    capsys.readouterr()
    assert main(["submit", str(out), "--root", str(tmp_path / "lb"), "--seed", "0"]) == 2
    assert "weights differ" in capsys.readouterr().err


@pytest.mark.slow
def test_unfinished_run_is_refused(run_dir, tmp_path, capsys):
    d = _copy(run_dir, tmp_path)
    con = sqlite3.connect(str(d / "results.sqlite"))
    con.execute("DELETE FROM results WHERE measurement='travel' AND sample=5")
    con.commit()
    con.close()
    assert main(["submit", str(d), "--root", str(tmp_path / "lb"), "--seed", "0"]) == 2
    assert "not finished: 1 measurement(s) incomplete (travel 5/6 samples stored)" in capsys.readouterr().err


# -- relations and rendering --------------------------------------------------------------------------
def _synthetic(i: int, curv: float, travel: float, family: str, name: str | None = None, acc: float = 90.0) -> dict:
    rows = [{"metric": "curvedness_median", "condition": "E=0.1", "value": curv, "lo": curv - 0.01, "hi": curv + 0.01,
             "interval": "percentile bootstrap 95%", "n": 100, "unit": "1 - R^2", "direction": "none"},
            {"metric": "travel_median", "condition": "", "value": travel, "lo": None, "hi": None, "interval": "none",
             "n": 100, "unit": "Linf eps", "direction": "higher"},
            {"metric": "pgd_robust_acc", "condition": "Linf eps=0.1", "value": 0.1 * i, "lo": None, "hi": None,
             "interval": "none", "n": 100, "unit": "fraction", "direction": "higher"}]
    return signed({"name": name or f"model {i}", "id": f"m{i}", "dataset": "fashion-mnist", "threat_model": "Linf",
                   "eps": 0.1, "clean_acc": acc, "robcurve": {"version": "0", "model": {"family": family}, "n": 100,
                                                              "metrics": rows}})


def signed(d: dict) -> dict:
    """A synthetic entry with a verification record whose content digest holds (listed as verified)."""
    d["robcurve"]["verification"] = {"samples": [0], "measurements": ["clean"], "compared": 1, "mismatches": 0,
                                     "tolerance": {"rtol": 1e-3}, "seed": 0}
    d["robcurve"]["verification"]["content_digest"] = content_digest(d)
    return d


def test_relations_across_models_are_exact_on_a_monotone_toy():
    entries = [Entry.model_validate(_synthetic(i, 0.1 * i, 1.0 - 0.1 * i, "cnn")) for i in range(5)]
    rels = {r.y: r for r in relations(tidy(entries))}
    r = rels["travel_median"]
    assert r.n == 5 and r.rho == pytest.approx(-1.0)
    assert r.p == pytest.approx(2 / 120)  # exact permutation test: 2 of 5! orderings are as extreme
    assert r.verdict.startswith("negative relation")
    few = relations(tidy(entries[:3]))
    assert all("too few models" in x.verdict for x in few)
    assert math.isclose(rels["pgd_robust_acc"].rho, 1.0)


def _pages_root(tmp_path: Path) -> Path:
    root = tmp_path / "lb"
    main(["leaderboard", "import", str(FIXTURES), "--root", str(root)])
    evil = _synthetic(9, 0.3, 0.02, "transformer", name="<script>window.__pwned=1</script><img src=x onerror=alert(1)>")
    (root / "fashion-mnist" / "Linf").mkdir(parents=True)
    for i, fam in ((1, "cnn"), (2, "transformer"), (3, "cnn")):
        (root / "fashion-mnist" / "Linf" / f"m{i}.json").write_text(json.dumps(_synthetic(i, 0.1 * i, 0.05 / i, fam)))
    (root / "fashion-mnist" / "Linf" / "m9.json").write_text(json.dumps(evil))
    render_all(load_entries(root), root)
    return root


def test_rendered_outputs_escape_names_and_carry_intervals(tmp_path):
    root = _pages_root(tmp_path)
    page = (root / "index.html").read_text()
    assert "<script>window.__pwned" not in page and "&lt;script&gt;window.__pwned" in page
    assert "<img src=x" not in page
    tex = (root / "leaderboard.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "[0.29, 0.31]" in tex
    md = (root / "README.md").read_text()
    assert "too few models to conclude" in md and "fashion-mnist / Linf" in md
    import robcurve.leaderboard as lb

    df = lb.load(dataset="fashion-mnist", threat="Linf", root=root)
    assert len(df) == 4 and {"curvedness_median", "curvedness_median_lo", "curvedness_median_n"} <= set(df.columns)


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed"
    drv = shutil.which("chromedriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not drv or not binary:
        return None, "no Chromium / chromedriver on this machine (scripts/install.sh installs them via apt as root)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(drv), options=opts), ""
    except Exception as e:  # pragma: no cover - depends on the machine
        return None, f"Chromium did not start: {type(e).__name__}: {str(e).splitlines()[0]}"


def test_html_page_in_a_real_headless_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root = _pages_root(tmp_path)
    driver, why = _browser()
    if driver is None:
        pytest.skip(f"browser test skipped: {why}")
    try:
        driver.get((root / "index.html").as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")
        assert len(rows) == len(load_entries(root)) == 7
        assert driver.execute_script("return window.__pwned === undefined")
        errors = [m for m in driver.get_log("browser") if m["level"] == "SEVERE" and "favicon" not in m["message"]]
        assert not errors, errors

        def ids() -> list[str]:
            return [r.find_elements(By.TAG_NAME, "td")[1].get_attribute("data-v")
                    for r in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")]

        before = ids()
        header = driver.find_element(By.CSS_SELECTOR, "#board th[data-col='clean']")
        header.click()  # the first click sorts best first: highest clean accuracy on top
        best = ids()
        assert best != before and best[0] == "Example2022Aug"  # 94.1 % is the highest clean accuracy
        assert "▼" in header.text
        header.click()
        assert ids()[-1] == "Example2022Aug" and "▲" in header.text
        Select(driver.find_element(By.CSS_SELECTOR, "select[data-key='family']")).select_by_value("transformer")
        visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr") if r.is_displayed()]
        assert len(visible) == 2
        assert "curvedness" in driver.find_element(By.CSS_SELECTOR, "#board th[data-col='headline_curvedness']").get_attribute("title")
        art = Path(os.environ.get("ROBCURVE_ARTIFACTS", ROOT / "runs" / "test-artifacts"))
        art.mkdir(parents=True, exist_ok=True)
        for width in (1366, 400):
            driver.set_window_size(width, 900)
            driver.get((root / "index.html").as_uri())
            over = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert over <= 0, f"the page body overflows by {over} px at {width} px"
            legend = driver.find_element(By.CSS_SELECTOR, "dl.legend")
            assert legend.is_displayed() and "travel" in legend.text
            driver.save_screenshot(str(art / f"leaderboard-{width}.png"))
            assert (art / f"leaderboard-{width}.png").stat().st_size > 1000
        # the scatter plots: one per relation, rho / exact p / n in the title, hover shows the model
        title = driver.execute_script("return document.getElementById('plot-0').layout.title.text")
        assert "exact p" in title and "n = 4 models" in title
        driver.execute_script("Plotly.Fx.hover('plot-0', [{curveNumber: 0, pointNumber: 0}])")
        hover = driver.execute_script("return [...document.querySelectorAll('#plot-0 .hovertext')].map(h => h.textContent).join(' ')")
        assert any(m in hover for m in ("m1", "m2", "m3", "m9")), hover
        assert driver.execute_script("return window.__pwned === undefined")
    finally:
        driver.quit()


def test_committed_pages_equal_what_render_regenerates(tmp_path):
    committed = ROOT / "leaderboards"
    entries = load_entries(committed)
    assert len(entries) >= 2, "the zoo is shipped on the leaderboard"
    copy = tmp_path / "lb"
    shutil.copytree(committed, copy)
    render_all(load_entries(copy), copy)
    for p in committed.iterdir():
        if p.is_file():
            assert (copy / p.name).read_bytes() == p.read_bytes(), p.name
