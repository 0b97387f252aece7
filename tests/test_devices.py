"""Issue #15: devices, memory budgets and autocast.

* Device-parametrised: every measurement runs on ``cpu`` always and on ``cuda`` where a CUDA
  device is present (skipped with the reason otherwise); the float32 results on the device
  are compared with a float64 CPU reference of the same model (so the CPU case is a real
  check too: float32 against float64).
* Memory budgets: sizes parse; a budget small enough to force sub-batched attacks and small
  trajectory chunks leaves PGD results exactly equal, DeepFool distances and trajectories
  equal to float rounding; the chunk never exceeds what the budget allows.
* Autocast: forwards run in bf16 and come back as float32, close to but not equal to the
  float32 forward; a run records it in its config (and so in its digest).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

import robcurve
from robcurve.attacks import deepfool, pgd
from robcurve.errors import RobcurveError
from robcurve.geometry import curvature, get_direction, trajectory, travel_distance
from robcurve.memory import (
    attack_batch_cap,
    budget_bytes,
    clear_chunk_cache,
    memory_budget,
    memory_cap,
    memory_per_image,
    parse_memory,
)

CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine"))]


@pytest.fixture(scope="module")
def data():
    return robcurve.load_dataset("fashion-mnist-embedded", n=12, seed=3)


@pytest.fixture(scope="module", params=["zoo:vit-fmnist", "zoo:resnet-fmnist"])
def pair(request):
    """(float32 model, float64 CPU reference) of one zoo model."""
    m = robcurve.load_model(request.param)
    ref = copy.deepcopy(m).double()
    return m, ref


@pytest.mark.parametrize("device", DEVICES)
def test_measurements_on_device_match_float64_reference(device, pair, data):
    m32, ref = pair
    m = copy.deepcopy(m32).to(device)
    x64, y = data.images.double(), data.labels.long()
    x = x64.float().to(device)
    yd = y.to(device)
    d = get_direction(ref, x64, y, "fgsm")  # one direction for both (FGSM signs can flip at float rounding)
    tr = trajectory(m, x, d.float().to(device), T=41, E=0.05, y=yd)
    tr_ref = trajectory(ref, x64, d, T=41, E=0.05, y=y)
    scale = tr_ref.features.abs().amax()
    assert float((tr.features.double() - tr_ref.features).abs().amax() / scale) < 1e-4
    c, c_ref = curvature(tr), curvature(tr_ref)
    ok = ~torch.isnan(c_ref.curvedness)
    assert torch.allclose(c.curvedness[ok].double(), c_ref.curvedness[ok].double(), atol=1e-3)
    tv = travel_distance(m, x, yd, d.float().to(device), h=1e-3, tol=1e-5, eps_max=0.5)
    tv_ref = travel_distance(ref, x64, y, d, h=1e-3, tol=1e-5, eps_max=0.5)
    close = (tv.eps.double() - tv_ref.eps.double()).abs() <= 1e-4
    assert close.float().mean() >= 0.9, (tv.eps, tv_ref.eps)
    df = deepfool(m, x, yd, steps=50, candidates=10)
    df_ref = deepfool(ref, x64, y, steps=50, candidates=10)
    both = df.success & df_ref.success & (df_ref.l2 > 0)  # l2 = 0: misclassified from the start
    assert both.sum() >= 0.7 * len(y)
    rel = (df.l2[both].double() - df_ref.l2[both].double()).abs() / df_ref.l2[both].double()
    assert float(rel.median()) < 1e-4
    p = pgd(m, x, yd, eps=0.05, steps=10, seed=0, early_stop=False)
    p_ref = pgd(ref, x64, y, eps=0.05, steps=10, seed=0, early_stop=False)
    assert (p.success == p_ref.success).float().mean() >= 0.9
    assert p.x_adv.device.type == torch.device(device).type


@pytest.mark.parametrize("device", DEVICES)
def test_bench_on_device(device, tmp_path):
    from robcurve.run.config import load_config
    from robcurve.run.runner import run

    cfg = load_config(None, {"model": "zoo:resnet-fmnist", "n": 8, "batch_size": 4, "device": device,
                             "measurements": ["clean", "trajectory", "pgd"], "trajectory": {"T": 21, "ladder": [1, 2]},
                             "out": str(tmp_path / device)})
    res = run(cfg, progress=False)
    entry = json.loads((tmp_path / device / "entry.json").read_text())
    acc = next(r for r in entry["robcurve"]["metrics"] if r["metric"] == "clean_acc")
    m = robcurve.load_model("zoo:resnet-fmnist")
    ds = robcurve.load_dataset("fashion-mnist-embedded", n=8, seed=0)
    with torch.no_grad():
        expect = float((m(ds.images).argmax(1) == ds.labels).float().mean())
    assert acc["value"] == pytest.approx(expect) and res.computed > 0


def test_device_errors_are_one_line(tmp_path):
    from robcurve.run.config import load_config
    from robcurve.run.runner import run

    if CUDA:
        pytest.skip("this machine has CUDA; the error is for machines without it")
    cfg = load_config(None, {"model": "zoo:resnet-fmnist", "n": 2, "device": "cuda", "out": str(tmp_path / "r")})
    with pytest.raises(RobcurveError, match="no CUDA device is available"):
        run(cfg, progress=False)
    assert not (tmp_path / "r").exists()


# -- memory budgets -----------------------------------------------------------------------------
@pytest.mark.parametrize("text,expect", [("2GiB", 2 * 2**30), ("512MB", 512 * 10**6), ("1.5 kib", 1536), (10**9, 10**9),
                                         ("1e6", 10**6), ("25%", "25%"), ("100 %", "100%")])
def test_parse_memory(text, expect):
    assert parse_memory(text) == expect


@pytest.mark.parametrize("bad", ["0", "-1GB", "2 parsecs", "", "150%", "0%", True, float("nan"), 0.5])
def test_parse_memory_refuses(bad):
    with pytest.raises(RobcurveError):
        parse_memory(bad)


def test_budget_sources():
    from robcurve.memory import DEFAULT_CAP, free_memory

    free = budget_bytes("cpu")  # the default: 2 GiB, or a quarter of the free memory if less; read once
    assert 2**20 <= free <= DEFAULT_CAP and budget_bytes("cpu") == free
    if free_memory("cpu") >= 8 * 2**30:
        assert free == DEFAULT_CAP  # the same on every machine with room: results do not depend on load
    assert budget_bytes("cpu", "50%") == pytest.approx(free_memory("cpu") / 2, rel=0.2)
    with memory_budget("3MiB"):
        assert budget_bytes("cpu") == 3 * 2**20
        assert budget_bytes("cpu", "1MiB") == 2**20  # an explicit value wins
    assert budget_bytes("cpu") == free


def test_chunks_and_attack_batches_follow_the_budget(data):
    m = robcurve.load_model("zoo:vit-fmnist")
    x, y = data.images, data.labels
    per = memory_per_image(m, x)
    clear_chunk_cache()
    with memory_budget(60 * per):
        assert memory_cap(m, x) == 20  # a third of the budget: the rest is slack
        d = get_direction(m, x, y)
        tr = trajectory(m, x, d, T=21, E=0.05, chunk_size=4096)  # an explicit chunk is lowered to fit
        assert max(tr.meta["chunks"]) == 20
        tr_auto = trajectory(m, x, d, T=21, E=0.05)
        assert max(tr_auto.meta["chunks"]) <= 20
        cap = attack_batch_cap(m, x)
        assert 1 <= cap < 20
    clear_chunk_cache()


def test_small_budget_leaves_run_results_unchanged(tmp_path):
    """A budget that forces attack sub-batches and small chunks: PGD and DeepFool rows are
    identical, trajectory rows equal to float rounding."""
    from robcurve.run.config import load_config
    from robcurve.run.runner import run
    from robcurve.run.store import Store

    base = {"model": "zoo:vit-fmnist", "n": 8, "batch_size": 8, "attack": "pgd",
            "measurements": ["clean", "trajectory", "pgd", "deepfool"], "trajectory": {"T": 21, "ladder": [1, 2]},
            "deepfool": {"steps": 20}}
    m = robcurve.load_model("zoo:vit-fmnist")
    x = robcurve.load_dataset("fashion-mnist-embedded", n=8).images
    small = 9 * memory_per_image(m, x)  # trajectory chunks of 3 images; attack sub-batches of 1
    assert attack_batch_cap(m, x, small) < 8
    clear_chunk_cache()
    ca, cb = load_config(None, {**base, "out": str(tmp_path / "a")}), load_config(None, {**base, "max_memory": int(small), "out": str(tmp_path / "b")})
    assert ca.digest() == cb.digest()  # a machine setting, not part of the run's identity
    try:
        run(ca, progress=False)
        run(cb, progress=False)
    finally:
        robcurve.memory.set_memory_budget(None)
    a, b = Store(tmp_path / "a" / "results.sqlite"), Store(tmp_path / "b" / "results.sqlite")
    for meas in ("pgd", "clean"):  # PGD: signs of gradients, and noise drawn for the whole batch
        assert a.rows(meas) == b.rows(meas), meas
    # DeepFool: the same steps; distances equal to the float rounding of other batch sizes (CPU
    # kernels round differently per batch size, ~1e-7); query counts may differ (a sub-batch
    # whose other rows have finished is re-run without them: cost, not result)
    da, db = a.rows("deepfool"), b.rows("deepfool")
    assert [(r[0], r[4]["success"], r[4]["pred_adv"]) for r in da] == [(r[0], r[4]["success"], r[4]["pred_adv"]) for r in db]
    assert [r[4]["l2"] for r in da] == pytest.approx([r[4]["l2"] for r in db], rel=1e-5)
    ta, tb = a.rows("trajectory"), b.rows("trajectory")
    assert len(ta) == len(tb) == 8
    va = [r[4]["feat_curvedness_E0.1"] for r in ta]
    vb = [r[4]["feat_curvedness_E0.1"] for r in tb]
    assert va == pytest.approx(vb, abs=1e-4, nan_ok=True)


# -- autocast -------------------------------------------------------------------------------------
def test_autocast_forward_is_close_but_not_equal(data):
    m = robcurve.load_model("zoo:vit-fmnist")
    x = data.images
    with torch.no_grad():
        full = m(x)
        m.autocast_dtype = torch.bfloat16
        try:
            half = m(x)
            lg, ft = m.logits_and_features(x)
        finally:
            m.autocast_dtype = None
    assert half.dtype == torch.float32 and ft.dtype == torch.float32 and lg.dtype == torch.float32
    assert not torch.equal(half, full)
    assert float((half - full).abs().amax()) < 0.1 * float(full.abs().amax())
    assert (half.argmax(1) == full.argmax(1)).float().mean() >= 0.9


def test_autocast_run_records_it(tmp_path):
    from robcurve.run.config import load_config
    from robcurve.run.runner import run

    base = {"model": "zoo:resnet-fmnist", "n": 4, "measurements": ["clean"], "attack": "none"}
    c32 = load_config(None, {**base, "out": str(tmp_path / "a")})
    c16 = load_config(None, {**base, "autocast": "bf16", "out": str(tmp_path / "b")})
    assert c32.digest() != c16.digest()
    run(c16, progress=False)
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["autocast"] == "bf16"
